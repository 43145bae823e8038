// Package gcpsmfake is an in-process GCP Secret Manager for tests: a gRPC
// server on the official generated interface
// secretmanagerpb.SecretManagerServiceServer, driven by the real Go client
// over a loopback connection. There is no official emulator.
//
// An IAM check, off unless a test calls EnforceIAM, makes every call need
// the permission Secret Manager documents for it (iam.go).
//
// It implements, with the documented semantics: CreateSecret, GetSecret,
// UpdateSecret (update_mask: labels, annotations, version_aliases; etag
// checked), DeleteSecret, AddSecretVersion (64 KiB limit, data_crc32c),
// GetSecretVersion, AccessSecretVersion (by number, "latest" or alias),
// ListSecretVersions (paged), Enable/Disable/DestroySecretVersion (etag
// checked). A stale etag fails with FAILED_PRECONDITION, as documented
// (cloud.google.com/secret-manager/docs/etags). Secret etags change on every
// modification of the secret and version etags on every modification of the
// version; adding a version does not change the secret's etag.
package gcpsmfake

import (
	"context"
	"fmt"
	"hash/crc32"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MaxPayload is Secret Manager's payload limit.
const MaxPayload = 64 << 10

var secretID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// Server is the fake. It is safe for concurrent use.
type Server struct {
	secretmanagerpb.UnimplementedSecretManagerServiceServer

	mu      sync.Mutex
	secrets map[string]*secret // by full name projects/P/secrets/S
	etagSeq int
	faults  map[string][]codes.Code // method name → codes of the next calls
	// dropAliases makes UpdateSecret ignore version_aliases silently.
	dropAliases bool
	// iam turns on the IAM check (iam.go); projects holds the bindings on
	// projects, a secret's own are in the secret.
	iam      bool
	projects map[string]policy

	addr string
	srv  *grpc.Server // nil while stopped
}

type secret struct {
	pb       *secretmanagerpb.Secret
	versions []*version // index n-1 holds version n
	policy   policy     // the secret's IAM bindings
}

type version struct {
	pb   *secretmanagerpb.SecretVersion
	data []byte
}

// New returns an empty Server.
func New() *Server {
	return &Server{secrets: map[string]*secret{}, faults: map[string][]codes.Code{}, projects: map[string]policy{}}
}

// Start serves a new Server on a loopback TCP port until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := New()
	if err := s.listen("127.0.0.1:0"); err != nil {
		t.Fatalf("gcpsmfake: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) listen(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	g := grpc.NewServer(grpc.UnaryInterceptor(s.intercept))
	secretmanagerpb.RegisterSecretManagerServiceServer(g, s)
	go func() { _ = g.Serve(lis) }()
	s.mu.Lock()
	s.srv, s.addr = g, lis.Addr().String()
	s.mu.Unlock()
	return nil
}

// Stop stops serving, closing every connection, as an outage does; the
// secrets stay. It is safe to call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	g := s.srv
	s.srv = nil
	s.mu.Unlock()
	if g != nil {
		g.Stop()
	}
}

// Restart serves again on the same address after Stop, with the secrets
// as they were.
func (s *Server) Restart() error {
	s.mu.Lock()
	addr := s.addr
	s.mu.Unlock()
	return s.listen(addr)
}

// Addr returns the server's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// ClientOptions are the options that connect the real client to s.
func (s *Server) ClientOptions() []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(s.Addr()),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}
}

// Client returns a real *secretmanager.Client connected to s, closed when
// the test ends.
func (s *Server) Client(t testing.TB) *secretmanager.Client {
	t.Helper()
	c, err := secretmanager.NewClient(context.Background(), s.ClientOptions()...)
	if err != nil {
		t.Fatalf("gcpsmfake: client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// FailNext makes the next n calls of method (e.g. "GetSecret") fail with code.
func (s *Server) FailNext(method string, n int, code codes.Code) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < n; i++ {
		s.faults[method] = append(s.faults[method], code)
	}
}

// DropAliases makes UpdateSecret ignore the version_aliases it is asked to
// write, answering success with the aliases the secret had, as some
// emulators of Secret Manager do. It is a fault for tests of drivers that
// must check what their writes did.
func (s *Server) DropAliases(drop bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropAliases = drop
}

func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	s.mu.Lock()
	if f := s.faults[method]; len(f) > 0 {
		c := f[0]
		s.faults[method] = f[1:]
		s.mu.Unlock()
		return nil, status.Errorf(c, "gcpsmfake: injected %v", c)
	}
	if s.iam {
		if err := s.authorize(ctx, method, req); err != nil {
			s.mu.Unlock()
			return nil, err
		}
	}
	s.mu.Unlock()
	return h(ctx, req)
}

func (s *Server) newEtag() string {
	s.etagSeq++
	return `"` + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(s.etagSeq) + `"`
}

func checkEtag(have, want string) error {
	if want != "" && want != have {
		return status.Errorf(codes.FailedPrecondition, "etag %s does not match the current etag", want)
	}
	return nil
}

// parseSecret splits projects/P/secrets/S.
func parseSecret(name string) (string, error) {
	p := strings.Split(name, "/")
	if len(p) != 4 || p[0] != "projects" || p[1] == "" || p[2] != "secrets" || !secretID.MatchString(p[3]) {
		return "", status.Errorf(codes.InvalidArgument, "invalid secret name %q", name)
	}
	return name, nil
}

// parseVersion splits projects/P/secrets/S/versions/V.
func parseVersion(name string) (string, string, error) {
	i := strings.LastIndex(name, "/versions/")
	if i < 0 {
		return "", "", status.Errorf(codes.InvalidArgument, "invalid secret version name %q", name)
	}
	sec, err := parseSecret(name[:i])
	if err != nil {
		return "", "", err
	}
	v := name[i+len("/versions/"):]
	if v == "" {
		return "", "", status.Errorf(codes.InvalidArgument, "invalid secret version name %q", name)
	}
	return sec, v, nil
}

// lookup parses a secret name and finds the secret; s.mu must be held.
func (s *Server) lookup(name string) (*secret, error) {
	name, err := parseSecret(name)
	if err != nil {
		return nil, err
	}
	return s.get(name)
}

func (s *Server) get(name string) (*secret, error) {
	sec, ok := s.secrets[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.", name)
	}
	return sec, nil
}

// resolve finds a version by number, "latest" (the newest enabled... as
// documented: the most recently created version) or alias.
func (s *Server) resolve(name string) (*secret, *version, error) {
	secName, v, err := parseVersion(name)
	if err != nil {
		return nil, nil, err
	}
	sec, err := s.get(secName)
	if err != nil {
		return nil, nil, err
	}
	var n int64
	switch {
	case v == "latest":
		n = int64(len(sec.versions))
	default:
		if num, err := strconv.ParseInt(v, 10, 64); err == nil {
			n = num
		} else if a, ok := sec.pb.VersionAliases[v]; ok {
			n = a
		} else {
			return nil, nil, status.Errorf(codes.NotFound, "Secret Version [%s] not found.", name)
		}
	}
	if n < 1 || n > int64(len(sec.versions)) {
		return nil, nil, status.Errorf(codes.NotFound, "Secret Version [%s] not found.", name)
	}
	return sec, sec.versions[n-1], nil
}

// CreateSecret implements the documented method.
func (s *Server) CreateSecret(_ context.Context, req *secretmanagerpb.CreateSecretRequest) (*secretmanagerpb.Secret, error) {
	if !strings.HasPrefix(req.GetParent(), "projects/") || strings.Count(req.GetParent(), "/") != 1 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid parent %q", req.GetParent())
	}
	if !secretID.MatchString(req.GetSecretId()) {
		return nil, status.Errorf(codes.InvalidArgument, "secret_id %q must match [a-zA-Z0-9_-]{1,255}", req.GetSecretId())
	}
	if req.GetSecret().GetReplication() == nil {
		return nil, status.Error(codes.InvalidArgument, "secret.replication is required")
	}
	name := req.GetParent() + "/secrets/" + req.GetSecretId()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.secrets[name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "Secret [%s] already exists.", name)
	}
	pb := proto.Clone(req.GetSecret()).(*secretmanagerpb.Secret)
	pb.Name = name
	pb.CreateTime = timestamppb.Now()
	pb.Etag = s.newEtag()
	if len(pb.VersionAliases) > 0 {
		return nil, status.Error(codes.InvalidArgument, "version_aliases cannot name versions of a new secret")
	}
	s.secrets[name] = &secret{pb: pb}
	return proto.Clone(pb).(*secretmanagerpb.Secret), nil
}

// GetSecret implements the documented method.
func (s *Server) GetSecret(_ context.Context, req *secretmanagerpb.GetSecretRequest) (*secretmanagerpb.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.lookup(req.GetName())
	if err != nil {
		return nil, err
	}
	return proto.Clone(sec.pb).(*secretmanagerpb.Secret), nil
}

// UpdateSecret implements the documented method: update_mask paths labels,
// annotations and version_aliases; the request's etag must match.
func (s *Server) UpdateSecret(_ context.Context, req *secretmanagerpb.UpdateSecretRequest) (*secretmanagerpb.Secret, error) {
	in := req.GetSecret()
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		return nil, status.Error(codes.InvalidArgument, "update_mask is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.lookup(in.GetName())
	if err != nil {
		return nil, err
	}
	if err := checkEtag(sec.pb.Etag, in.GetEtag()); err != nil {
		return nil, err
	}
	for _, p := range paths {
		switch p {
		case "labels", "annotations":
		case "version_aliases":
			for alias, n := range in.GetVersionAliases() {
				if n < 1 || n > int64(len(sec.versions)) {
					return nil, status.Errorf(codes.InvalidArgument, "version_aliases: %s names version %d, which does not exist", alias, n)
				}
				if sec.versions[n-1].pb.State == secretmanagerpb.SecretVersion_DESTROYED {
					return nil, status.Errorf(codes.InvalidArgument, "version_aliases: %s names destroyed version %d", alias, n)
				}
			}
		default:
			return nil, status.Errorf(codes.InvalidArgument, "update_mask path %q is not supported", p)
		}
	}
	if total := annotationSize(in.GetAnnotations()); total > 16<<10 {
		return nil, status.Errorf(codes.InvalidArgument, "annotations total %d bytes, more than 16 KiB", total)
	}
	for _, p := range paths {
		switch p {
		case "labels":
			sec.pb.Labels = in.GetLabels()
		case "annotations":
			sec.pb.Annotations = in.GetAnnotations()
		case "version_aliases":
			if !s.dropAliases {
				sec.pb.VersionAliases = in.GetVersionAliases()
			}
		}
	}
	sec.pb.Etag = s.newEtag()
	return proto.Clone(sec.pb).(*secretmanagerpb.Secret), nil
}

func annotationSize(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}

// DeleteSecret implements the documented method.
func (s *Server) DeleteSecret(_ context.Context, req *secretmanagerpb.DeleteSecretRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.lookup(req.GetName())
	if err != nil {
		return nil, err
	}
	if err := checkEtag(sec.pb.Etag, req.GetEtag()); err != nil {
		return nil, err
	}
	delete(s.secrets, sec.pb.Name)
	return &emptypb.Empty{}, nil
}

// AddSecretVersion implements the documented method.
func (s *Server) AddSecretVersion(_ context.Context, req *secretmanagerpb.AddSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	data := req.GetPayload().GetData()
	if len(data) > MaxPayload {
		return nil, status.Errorf(codes.InvalidArgument, "payload is %d bytes, larger than the 65536-byte limit", len(data))
	}
	if c := req.GetPayload().DataCrc32C; c != nil && int64(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))) != *c {
		return nil, status.Error(codes.InvalidArgument, "data_crc32c does not match the payload")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.lookup(req.GetParent())
	if err != nil {
		return nil, err
	}
	v := &version{data: append([]byte(nil), data...), pb: &secretmanagerpb.SecretVersion{
		Name:       fmt.Sprintf("%s/versions/%d", sec.pb.Name, len(sec.versions)+1),
		CreateTime: timestamppb.Now(),
		State:      secretmanagerpb.SecretVersion_ENABLED,
		Etag:       s.newEtag(),
	}}
	sec.versions = append(sec.versions, v)
	return proto.Clone(v.pb).(*secretmanagerpb.SecretVersion), nil
}

// GetSecretVersion implements the documented method.
func (s *Server) GetSecretVersion(_ context.Context, req *secretmanagerpb.GetSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, v, err := s.resolve(req.GetName())
	if err != nil {
		return nil, err
	}
	return proto.Clone(v.pb).(*secretmanagerpb.SecretVersion), nil
}

// AccessSecretVersion implements the documented method: FAILED_PRECONDITION
// for a disabled or destroyed version.
func (s *Server) AccessSecretVersion(_ context.Context, req *secretmanagerpb.AccessSecretVersionRequest) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, v, err := s.resolve(req.GetName())
	if err != nil {
		return nil, err
	}
	if st := v.pb.State; st != secretmanagerpb.SecretVersion_ENABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in %s state.", v.pb.Name, st)
	}
	c := int64(crc32.Checksum(v.data, crc32.MakeTable(crc32.Castagnoli)))
	return &secretmanagerpb.AccessSecretVersionResponse{
		Name:    v.pb.Name,
		Payload: &secretmanagerpb.SecretPayload{Data: append([]byte(nil), v.data...), DataCrc32C: &c},
	}, nil
}

// ListSecretVersions implements the documented method, newest first, paged.
func (s *Server) ListSecretVersions(_ context.Context, req *secretmanagerpb.ListSecretVersionsRequest) (*secretmanagerpb.ListSecretVersionsResponse, error) {
	size := int(req.GetPageSize())
	if size <= 0 || size > 25000 {
		size = 25000
	}
	start := 0
	if t := req.GetPageToken(); t != "" {
		var err error
		if start, err = strconv.Atoi(t); err != nil || start < 0 {
			return nil, status.Error(codes.InvalidArgument, "invalid page_token")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.lookup(req.GetParent())
	if err != nil {
		return nil, err
	}
	all := make([]*secretmanagerpb.SecretVersion, 0, len(sec.versions))
	for _, v := range sec.versions {
		if f := req.GetFilter(); f != "" && !matchState(f, v.pb.State) {
			continue
		}
		all = append(all, proto.Clone(v.pb).(*secretmanagerpb.SecretVersion))
	}
	sort.Slice(all, func(i, j int) bool { return versionNum(all[i].Name) > versionNum(all[j].Name) })
	resp := &secretmanagerpb.ListSecretVersionsResponse{TotalSize: int32(len(all))}
	if start > len(all) {
		start = len(all)
	}
	end := min(start+size, len(all))
	resp.Versions = all[start:end]
	if end < len(all) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return resp, nil
}

// matchState supports the filter form "state:ENABLED".
func matchState(filter string, st secretmanagerpb.SecretVersion_State) bool {
	want, ok := strings.CutPrefix(strings.TrimSpace(filter), "state:")
	return !ok || strings.EqualFold(want, st.String())
}

func versionNum(name string) int {
	n, _ := strconv.Atoi(name[strings.LastIndex(name, "/")+1:])
	return n
}

func (s *Server) setState(name, etag string, st secretmanagerpb.SecretVersion_State) (*secretmanagerpb.SecretVersion, error) {
	if _, v, err := parseVersion(name); err != nil {
		return nil, err
	} else if _, err := strconv.Atoi(v); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "a version must be named by number here, not %q", v)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, v, err := s.resolve(name)
	if err != nil {
		return nil, err
	}
	if err := checkEtag(v.pb.Etag, etag); err != nil {
		return nil, err
	}
	if v.pb.State == secretmanagerpb.SecretVersion_DESTROYED {
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is destroyed.", v.pb.Name)
	}
	v.pb.State = st
	if st == secretmanagerpb.SecretVersion_DESTROYED {
		v.pb.DestroyTime = timestamppb.Now()
		v.data = nil
		// Aliases of a destroyed version are removed.
		n := int64(versionNum(v.pb.Name))
		for a, num := range sec.pb.VersionAliases {
			if num == n {
				delete(sec.pb.VersionAliases, a)
			}
		}
	}
	v.pb.Etag = s.newEtag()
	return proto.Clone(v.pb).(*secretmanagerpb.SecretVersion), nil
}

// EnableSecretVersion implements the documented method.
func (s *Server) EnableSecretVersion(_ context.Context, req *secretmanagerpb.EnableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.setState(req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_ENABLED)
}

// DisableSecretVersion implements the documented method.
func (s *Server) DisableSecretVersion(_ context.Context, req *secretmanagerpb.DisableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.setState(req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_DISABLED)
}

// DestroySecretVersion implements the documented method.
func (s *Server) DestroySecretVersion(_ context.Context, req *secretmanagerpb.DestroySecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.setState(req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_DESTROYED)
}

// Destroyed reports how many versions of secret name were destroyed, so a
// test can check that a driver never destroys.
func (s *Server) Destroyed(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	if sec, ok := s.secrets[name]; ok {
		for _, v := range sec.versions {
			if v.pb.State == secretmanagerpb.SecretVersion_DESTROYED {
				n++
			}
		}
	}
	return n
}
