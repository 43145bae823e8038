"""Run moto's server with two gaps of its IAM evaluator filled, for keywarden's
policy tests (internal/mototest StartIAM). Arguments are moto.server's.

moto (moto/iam/access_control.py) authenticates every request (SigV4 against
the access keys in its IAM) and evaluates the caller's identity policies, but:

1. Secrets Manager requests are authorized against Resource "*": its response
   class has no _determine_resource, so a statement naming a secret's ARN
   never applies. Here the resource is the secret's ARN (with its random
   suffix) when the secret exists, and arn:...:secret:NAME when it does not
   (a name, or a CreateSecret of a new secret: no suffix exists yet).
2. IAMPolicyStatement._match turns "*" into ".*" and leaves the rest a regular
   expression: "?" is a quantifier (NAME-?????? fails with "multiple repeat")
   and "." matches any character. Here "*" matches any run of characters,
   "?" exactly one, everything else itself, as in IAM.
3. A refusal is answered in IAM's XML, which a Secrets Manager client (JSON
   protocol) cannot decode. Here it is Secrets Manager's JSON error, as AWS
   sends it: AccessDeniedException, UnrecognizedClientException or
   InvalidSignatureException, status 400.

Still not evaluated (moto's limits): conditions (context keys such as
kms:ViaService, kms:EncryptionContext:*, secretsmanager:VersionStage),
KMS (moto's Secrets Manager never calls KMS), resource-based policies,
permission boundaries, SCPs, and case-insensitive action names.
"""

import json
import re
import sys

from moto import server
from moto.core.exceptions import JsonRESTError, _RESTError
from moto.iam.access_control import IAMPolicyStatement
from moto.secretsmanager.models import secretsmanager_backends
from moto.secretsmanager.responses import SecretsManagerResponse
from moto.utilities.utils import get_partition

if not hasattr(IAMPolicyStatement, "_match"):
    sys.exit("mototest: moto's IAMPolicyStatement has no _match any more; review iamserver.py")
if hasattr(SecretsManagerResponse, "_determine_resource"):
    sys.exit("mototest: moto now evaluates Secrets Manager resources itself; review iamserver.py")


def _iam_match(pattern, value):
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.DOTALL)


def _determine_resource(self):
    try:
        body = json.loads(self.body or "{}")
    except ValueError:
        return "*"
    if not isinstance(body, dict):
        return "*"
    sid = body.get("SecretId") or body.get("Name")
    if not isinstance(sid, str) or not sid:
        return "*"
    backend = secretsmanager_backends[self.current_account][self.region]
    if sid in backend.secrets:
        return backend.secrets[sid].arn
    if sid.startswith("arn:"):
        return sid
    return "arn:%s:secretsmanager:%s:%s:secret:%s" % (
        get_partition(self.region), self.region, self.current_account, sid)


_SM_ERRORS = {
    "AccessDenied": "AccessDeniedException",
    "InvalidClientTokenId": "UnrecognizedClientException",
    "SignatureDoesNotMatch": "InvalidSignatureException",
}
_authorize = SecretsManagerResponse._authenticate_and_authorize_normal_action


def _authorize_json(self, resource="*"):
    try:
        _authorize(self, resource)
    except _RESTError as e:
        raise JsonRESTError(_SM_ERRORS.get(e.error_type, e.error_type), e.message) from e


IAMPolicyStatement._match = staticmethod(_iam_match)
SecretsManagerResponse._determine_resource = _determine_resource
SecretsManagerResponse._authenticate_and_authorize_normal_action = _authorize_json

server.main(sys.argv[1:])
