package aws

import (
	"context"
	"errors"
	"net"
	"strings"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/keywarden/keywarden/providers/codes"
)

// apiCodes maps Secrets Manager and generic AWS error codes to portable
// codes. Decisions worth a word:
//   - DecryptionFailure and EncryptionFailure are FailedPrecondition: the KMS
//     key is disabled, pending deletion or not usable by the caller; retrying
//     does not help until someone fixes the key or its policy.
//   - InvalidRequestException is FailedPrecondition: AWS uses it for requests
//     that the secret's state forbids (marked for deletion, rotation in
//     progress), not for malformed input.
//   - InvalidParameterException is InvalidArgument, except where the driver
//     uses it as the outcome of a compare-and-swap (UpdateSecretVersionStage
//     with a stale RemoveFromVersionId), which Promote reports as Aborted.
//   - ResourceExistsException is Aborted: the driver only meets it when
//     another writer won a race for the same ClientRequestToken or name.
var apiCodes = map[string]codes.Code{
	"ResourceNotFoundException": codes.NotFound,

	"AccessDeniedException": codes.PermissionDenied,
	"AccessDenied":          codes.PermissionDenied,

	"UnrecognizedClientException": codes.Unauthenticated,
	"InvalidClientTokenId":        codes.Unauthenticated,
	"ExpiredTokenException":       codes.Unauthenticated,
	"ExpiredToken":                codes.Unauthenticated,
	"IncompleteSignature":         codes.Unauthenticated,
	"InvalidSignatureException":   codes.Unauthenticated,
	"SignatureDoesNotMatch":       codes.Unauthenticated,
	"MissingAuthenticationToken":  codes.Unauthenticated,

	"ThrottlingException":       codes.ResourceExhausted,
	"Throttling":                codes.ResourceExhausted,
	"TooManyRequestsException":  codes.ResourceExhausted,
	"RequestLimitExceeded":      codes.ResourceExhausted,
	"LimitExceededException":    codes.ResourceExhausted,
	"ServiceQuotaExceededError": codes.ResourceExhausted,

	"DecryptionFailure":           codes.FailedPrecondition,
	"EncryptionFailure":           codes.FailedPrecondition,
	"InvalidRequestException":     codes.FailedPrecondition,
	"PreconditionNotMetException": codes.FailedPrecondition,

	"InvalidParameterException":        codes.InvalidArgument,
	"InvalidParameterValue":            codes.InvalidArgument,
	"ValidationException":              codes.InvalidArgument,
	"InvalidNextTokenException":        codes.InvalidArgument,
	"MalformedPolicyDocumentException": codes.InvalidArgument,

	"ResourceExistsException": codes.Aborted,

	"InternalServiceError":        codes.Unavailable,
	"InternalFailure":             codes.Unavailable,
	"ServiceUnavailable":          codes.Unavailable,
	"ServiceUnavailableException": codes.Unavailable,
}

// codeOf classifies an error returned by the SDK.
func codeOf(ctx context.Context, err error) codes.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	if ctx.Err() != nil {
		// The SDK may report a cancelled request as a transport error.
		return codes.Of(codes.FromContext(ctx.Err()))
	}
	var ce *credentialsError
	if errors.As(err, &ce) || strings.Contains(err.Error(), "get identity: ") {
		// The credential chain failed: tagged by credentials, or, for
		// clients made by the caller, recognised by the SDK's message.
		return codes.Unauthenticated
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if c, ok := apiCodes[ae.ErrorCode()]; ok {
			return c
		}
		var re *smithyhttp.ResponseError
		if ae.ErrorFault() == smithy.FaultServer || errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
			return codes.Unavailable
		}
		return codes.Unknown
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		// An answer without an error code the SDK could read, e.g. a proxy's
		// page or a refusal in another protocol's shape: its status says
		// enough to stop retrying a refusal, or to back off.
		if c := codes.FromHTTPStatus(re.HTTPStatusCode()); c != codes.Unknown {
			return c
		}
	}
	var (
		se *v4.SigningError
		qe ratelimit.QuotaExceededError
		rs *smithyhttp.RequestSendError
		ne net.Error
	)
	switch {
	case errors.As(err, &se):
		return codes.Unauthenticated // signing found no credentials
	case errors.As(err, &qe), errors.As(err, &rs), errors.As(err, &ne):
		return codes.Unavailable
	}
	return codes.Unknown
}

// wrap maps an SDK error once: msg says what failed ("aws: read CURRENT of
// secret \"x\""); the SDK error, which never holds a secret value, follows.
func wrap(ctx context.Context, msg string, err error) error {
	if err == nil {
		return nil
	}
	c := codeOf(ctx, err)
	if c == codes.PermissionDenied {
		msg += deniedHint
	}
	return codes.Wrap(c, msg, err)
}

// deniedHint follows the message of a refused call: what an operator
// checks. AWS's own message, which follows, names the identity, the action
// and the resource.
const deniedHint = " (denied: grant the action on this secret to the AWS identity, in its IAM policy," +
	" the secret's resource policy and the KMS key's policy; AWS also denies a secret that does not exist" +
	" when the policy names only its ARN NAME-??????; least-privilege policies: deploy/policies/aws-reader.json, aws-rotator.json)"

// isAPI reports whether err is an AWS API error with code name.
func isAPI(err error, name string) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == name
}

// credentials tags the errors of a credential provider, so that codeOf
// reports them as Unauthenticated whatever the chain failed on.
type credentials struct{ p sdkaws.CredentialsProvider }

// Retrieve returns the credentials of the wrapped provider.
func (c credentials) Retrieve(ctx context.Context) (sdkaws.Credentials, error) {
	v, err := c.p.Retrieve(ctx)
	if err != nil && ctx.Err() == nil {
		return v, &credentialsError{err: err}
	}
	return v, err
}

// IsCredentialsProvider lets the SDK see the wrapped provider's type.
func (c credentials) IsCredentialsProvider(t sdkaws.CredentialsProvider) bool {
	return sdkaws.IsCredentialsProvider(c.p, t)
}

type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "no usable AWS credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }
