package gcpsmfake

import (
	"context"
	"fmt"
	"strings"
	"testing"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The IAM check, off until EnforceIAM: every call then needs the caller's
// permission, as Secret Manager documents it per method in its REST
// reference ("Authorization requires the following IAM permission on the
// specified resource ...", cloud.google.com/secret-manager/docs/reference/rest/v1):
//
//	CreateSecret         secretmanager.secrets.create   on parent, the project
//	GetSecret            secretmanager.secrets.get      on name
//	UpdateSecret         secretmanager.secrets.update   on secret.name
//	DeleteSecret         secretmanager.secrets.delete   on name
//	AddSecretVersion     secretmanager.versions.add     on parent, the secret
//	GetSecretVersion     secretmanager.versions.get     on name
//	AccessSecretVersion  secretmanager.versions.access  on name
//	ListSecretVersions   secretmanager.versions.list    on parent, the secret
//	EnableSecretVersion  secretmanager.versions.enable  on name
//	DisableSecretVersion secretmanager.versions.disable on name
//	DestroySecretVersion secretmanager.versions.destroy on name
//
// (The v1 reference page of versions.disable names
// "secretmanager.secrets.disable", a permission that exists in no role; the
// role list of cloud.google.com/iam/docs/roles-permissions/secretmanager
// and the how-to page "Disable a secret version", which asks for the Secret
// Version Manager role, name secretmanager.versions.disable, which the fake
// checks.)
//
// Where a permission is granted: "IAM roles can't be granted on a secret
// version" (cloud.google.com/secret-manager/docs/access-control), so a
// version's permissions are those on its secret. A binding is made on a
// project or on an existing secret (gcloud secrets add-iam-policy-binding);
// the secret's bindings are part of the secret and go with it when it is
// deleted, and a project's reach every secret of the project.
//
// A refusal is PERMISSION_DENIED with Secret Manager's message, "Permission
// 'P' denied for resource 'R' (or it may not exist).", R being the name in
// the request. It is also the answer for a secret that does not exist, to a
// caller without the permission on the project: the permission is checked
// before the secret is looked up (a missing secret has no bindings), so only
// a caller holding the permission on the project learns NOT_FOUND. A call
// without a known token is UNAUTHENTICATED.
//
// Not modelled: IAM conditions, deny policies, organization policies and
// VPC Service Controls, inheritance above the project (folders,
// organization), roles and their stages (a binding holds permissions), the
// resourcemanager.projects.get the predefined roles add, regional secrets,
// CMEK (Cloud KMS permissions), getIamPolicy/setIamPolicy/testIamPermissions
// and ListSecrets, which the fake does not implement.

// Permissions are the permissions the fake checks, one per method above.
var Permissions = []string{
	"secretmanager.secrets.create",
	"secretmanager.secrets.get",
	"secretmanager.secrets.update",
	"secretmanager.secrets.delete",
	"secretmanager.versions.add",
	"secretmanager.versions.get",
	"secretmanager.versions.access",
	"secretmanager.versions.list",
	"secretmanager.versions.enable",
	"secretmanager.versions.disable",
	"secretmanager.versions.destroy",
}

// policy maps a member (here: a bearer token) to its permissions.
type policy map[string]map[string]bool

func (p policy) grant(member string, perms []string) {
	if p[member] == nil {
		p[member] = map[string]bool{}
	}
	for _, perm := range perms {
		p[member][perm] = true
	}
}

// EnforceIAM turns the IAM check on: from now on every call must carry
// "authorization: Bearer TOKEN" with a token that Grant named, and needs the
// permission of its method on its resource.
func (s *Server) EnforceIAM() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.iam = true
}

// Grant binds permissions to the caller whose bearer token is member, on
// resource: a project ("projects/P", reaching every secret of it) or an
// existing secret ("projects/P/secrets/S"). A secret that does not exist is
// NotFound, as gcloud secrets add-iam-policy-binding answers. An unknown
// permission is an error, so that a typo in a role cannot pass for a grant.
func (s *Server) Grant(resource, member string, perms ...string) error {
	for _, p := range perms {
		if !known(p) {
			return status.Errorf(codes.InvalidArgument, "gcpsmfake: grant: permission %q is not one the fake checks", p)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if project, ok := parseProject(resource); ok {
		if s.projects[project] == nil {
			s.projects[project] = policy{}
		}
		s.projects[project].grant(member, perms)
		return nil
	}
	sec, err := s.lookup(resource)
	if err != nil {
		return fmt.Errorf("gcpsmfake: grant on %s: %w", resource, err)
	}
	if sec.policy == nil {
		sec.policy = policy{}
	}
	sec.policy.grant(member, perms)
	return nil
}

func known(perm string) bool {
	for _, p := range Permissions {
		if p == perm {
			return true
		}
	}
	return false
}

// parseProject reports whether name is "projects/P".
func parseProject(name string) (string, bool) {
	p, ok := strings.CutPrefix(name, "projects/")
	return name, ok && p != "" && !strings.Contains(p, "/")
}

// required is the permission of a request and the resource it is checked
// on: the name in the request, and the secret (or, for CreateSecret, the
// project) whose bindings grant it.
func required(req any) (perm, resource, secret string, ok bool) {
	switch r := req.(type) {
	case *secretmanagerpb.CreateSecretRequest:
		return "secretmanager.secrets.create", r.GetParent(), "", true
	case *secretmanagerpb.GetSecretRequest:
		return "secretmanager.secrets.get", r.GetName(), r.GetName(), true
	case *secretmanagerpb.UpdateSecretRequest:
		return "secretmanager.secrets.update", r.GetSecret().GetName(), r.GetSecret().GetName(), true
	case *secretmanagerpb.DeleteSecretRequest:
		return "secretmanager.secrets.delete", r.GetName(), r.GetName(), true
	case *secretmanagerpb.AddSecretVersionRequest:
		return "secretmanager.versions.add", r.GetParent(), r.GetParent(), true
	case *secretmanagerpb.ListSecretVersionsRequest:
		return "secretmanager.versions.list", r.GetParent(), r.GetParent(), true
	case *secretmanagerpb.GetSecretVersionRequest:
		return "secretmanager.versions.get", r.GetName(), secretOf(r.GetName()), true
	case *secretmanagerpb.AccessSecretVersionRequest:
		return "secretmanager.versions.access", r.GetName(), secretOf(r.GetName()), true
	case *secretmanagerpb.EnableSecretVersionRequest:
		return "secretmanager.versions.enable", r.GetName(), secretOf(r.GetName()), true
	case *secretmanagerpb.DisableSecretVersionRequest:
		return "secretmanager.versions.disable", r.GetName(), secretOf(r.GetName()), true
	case *secretmanagerpb.DestroySecretVersionRequest:
		return "secretmanager.versions.destroy", r.GetName(), secretOf(r.GetName()), true
	}
	return "", "", "", false
}

func secretOf(version string) string {
	if i := strings.LastIndex(version, "/versions/"); i >= 0 {
		return version[:i]
	}
	return version
}

// projectOf returns "projects/P" of a secret or project name.
func projectOf(name string) string {
	p := strings.SplitN(name, "/", 3)
	if len(p) < 2 {
		return name
	}
	return p[0] + "/" + p[1]
}

// authorize applies the IAM check to one call; s.mu must be held.
func (s *Server) authorize(ctx context.Context, method string, req any) error {
	member, ok := bearer(ctx)
	if !ok || !s.isMember(member) {
		return status.Error(codes.Unauthenticated, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
	}
	perm, resource, secretName, ok := required(req)
	if !ok {
		return status.Errorf(codes.Unimplemented, "gcpsmfake: the IAM check knows no permission for %s", method)
	}
	if s.projects[projectOf(resource)][member][perm] {
		return nil
	}
	if sec, ok := s.secrets[secretName]; ok && sec.policy[member][perm] {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "Permission '%s' denied for resource '%s' (or it may not exist).", perm, resource)
}

// isMember reports whether some binding names member; s.mu must be held.
func (s *Server) isMember(member string) bool {
	for _, p := range s.projects {
		if p[member] != nil {
			return true
		}
	}
	for _, sec := range s.secrets {
		if sec.policy[member] != nil {
			return true
		}
	}
	return false
}

// bearer returns the token of the call's "authorization: Bearer TOKEN".
func bearer(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok && tok != "" {
			return tok, true
		}
	}
	return "", false
}

// token is a gRPC per-call credential carrying a bearer token; it allows
// the plaintext loopback connection of the fake.
type token string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t token) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (token) RequireTransportSecurity() bool { return false }

// ClientOptionsAs are the options that connect the real client to s as the
// caller holding bearer token member.
func (s *Server) ClientOptionsAs(member string) []option.ClientOption {
	return append(s.ClientOptions(), option.WithGRPCDialOption(grpc.WithPerRPCCredentials(token(member))))
}

// ClientAs returns a real *secretmanager.Client connected to s as the
// caller holding bearer token member, closed when the test ends.
func (s *Server) ClientAs(t testing.TB, member string) *secretmanager.Client {
	t.Helper()
	c, err := secretmanager.NewClient(context.Background(), s.ClientOptionsAs(member)...)
	if err != nil {
		t.Fatalf("gcpsmfake: client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
