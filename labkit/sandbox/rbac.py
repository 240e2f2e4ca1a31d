"""Who a request is, and what RBAC lets them do: the API server's authentication and authorization.

Two kinds of bearer token authenticate:

- the sandbox's own token (the kubeconfig's), a cluster administrator (group ``system:masters``), allowed
  everything without looking at RBAC, as the real API server short-circuits that group;
- ServiceAccount tokens minted by a ``TokenRequest`` (``POST .../serviceaccounts/NAME/token``, what
  ``kubectl create token NAME`` sends): signed JWTs naming the account and its uid. A token stops working when
  it expires or when its account (or the object it is bound to) is deleted, even if one of the same name is
  made again.

Anything else is ``401 Unauthorized``. A ServiceAccount's request is then authorized by the RBAC objects in the
store, evaluated as Kubernetes' RBAC authorizer does (``plugin/pkg/auth/authorizer/rbac``): the request's
attributes are read from its path as ``RequestInfoFactory`` reads them (verb, API group, resource, subresource,
namespace, name), every ClusterRoleBinding and every RoleBinding of the request's namespace that names the user,
one of its groups or its ServiceAccount grants the rules of its role, and a request no rule allows is ``403
Forbidden`` with the real message (``pods is forbidden: User "system:serviceaccount:a:b" cannot list resource
"pods" in API group "" in the namespace "c"``). A fresh sandbox has the bootstrap roles a cluster starts with:
``cluster-admin`` for ``system:masters``, ``system:discovery`` (discovery and OpenAPI paths) and
``system:basic-user`` (the self-reviews behind ``kubectl auth can-i``/``whoami``) for every authenticated user.

Validation and defaulting of Roles, ClusterRoles and their bindings are here too (:func:`check_object`), in the
words of ``pkg/apis/rbac/validation``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .params import query_bool
from .resources import BY_PLURAL, Resource
from .store import Obj, Store, StoreError, not_found
from .validation import FieldError, invalid, invalid_value, not_supported, required

__all__ = [
    "API_AUDIENCE",
    "Attributes",
    "Auth",
    "Decision",
    "UserInfo",
    "bootstrap_objects",
    "check_object",
    "forbidden",
    "request_attributes",
]

GROUP = "rbac.authorization.k8s.io"
ROLES = BY_PLURAL[(GROUP, "roles")]
ROLE_BINDINGS = BY_PLURAL[(GROUP, "rolebindings")]
CLUSTER_ROLES = BY_PLURAL[(GROUP, "clusterroles")]
CLUSTER_ROLE_BINDINGS = BY_PLURAL[(GROUP, "clusterrolebindings")]
SERVICE_ACCOUNTS = BY_PLURAL[("", "serviceaccounts")]
BOUND_KINDS: dict[str, Resource] = {"Pod": BY_PLURAL[("", "pods")], "Secret": BY_PLURAL[("", "secrets")]}
"""Objects a token may be bound to (``spec.boundObjectRef``): the token dies with them."""
RBAC_KINDS = frozenset({"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"})

API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
"""The API server's audience and issuer: a token for other audiences is not accepted here."""
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 2**32
ADMIN_USER = "sandbox"
ADMIN_GROUPS = ("system:masters", "system:authenticated")
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
"""``/namespaces/NS/status`` is the namespace's own subresource, not a resource called ``status`` in NS."""
UPGRADE_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
"""A WebSocket GET of these also needs ``create`` (the AuthorizePodWebsocketUpgradeCreatePermission gate)."""


# --------------------------------------------------------------------------------------------- who and what


@dataclass(frozen=True)
class UserInfo:
    """An authenticated user: name, uid, groups and the token's id (``authentication.kubernetes.io/credential-id``)."""

    username: str
    groups: tuple[str, ...]
    uid: str = ""
    credential_id: str = ""

    @property
    def is_admin(self) -> bool:
        return "system:masters" in self.groups

    def as_dict(self) -> dict[str, Any]:
        """The ``userInfo`` of a SelfSubjectReview."""
        out: dict[str, Any] = {"username": self.username}
        if self.uid:
            out["uid"] = self.uid
        out["groups"] = list(self.groups)
        if self.credential_id:
            out["extra"] = {"authentication.kubernetes.io/credential-id": [f"JTI={self.credential_id}"]}
        return out


ADMIN = UserInfo(ADMIN_USER, ADMIN_GROUPS)


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do, as the authorizer sees it (``authorizer.Attributes``)."""

    verb: str
    path: str = ""
    resource_request: bool = True
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True)
class Decision:
    """The authorizer's answer: allowed or not, and why (``RBAC: allowed by RoleBinding ...``)."""

    allowed: bool
    reason: str = ""


def _name_from_field_selector(selector: str) -> str:
    """The name a ``metadata.name=X`` term pins (``kubectl get pod X -w`` lists with it), or ""."""
    for term in selector.split(","):
        key, _, value = term.replace("==", "=").partition("=")
        if key.strip() == "metadata.name" and value and "/" not in value and value not in (".", ".."):
            return value.strip()
    return ""


def request_attributes(method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """A request's attributes, read from its method, path and query as the API server's RequestInfo does.

    Examples:
        >>> a = request_attributes("GET", "/api/v1/namespaces/team/pods", {})
        >>> a.verb, a.api_group, a.resource, a.namespace
        ('list', '', 'pods', 'team')
        >>> a = request_attributes("POST", "/api/v1/namespaces/team/pods/web-1/exec", {})
        >>> a.verb, a.resource, a.subresource, a.name
        ('create', 'pods', 'exec', 'web-1')
        >>> request_attributes("GET", "/apis/apps/v1/deployments", {"watch": "true"}).verb
        'watch'
        >>> request_attributes("GET", "/api/v1/namespaces/team", {}).namespace
        'team'
        >>> request_attributes("GET", "/openapi/v3", {}).resource_request
        False
    """
    verbs = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    non_resource = Attributes(verb=method.lower(), path=path, resource_request=False)
    parts = path.strip("/").split("/")
    if not parts or parts[0] not in ("api", "apis"):
        return non_resource
    if parts[0] == "apis":
        if len(parts) < 3:
            return non_resource
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        if len(parts) < 2:
            return non_resource
        group, version, rest = "", parts[1], parts[2:]
    if not rest:
        return non_resource
    verb = verbs.get(method.upper(), method.lower())
    if rest[0] == "watch":  # the deprecated /api/v1/watch/... form
        verb, rest = "watch", rest[1:]
        if not rest:
            return non_resource
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if not name and verb == "get":
        verb = "watch" if query_bool(query, "watch") else "list"
        name = _name_from_field_selector(str(query.get("fieldSelector") or ""))
    elif name and verb == "get" and query_bool(query, "watch"):
        verb = "watch"
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb=verb, path=path, api_group=group, api_version=version, namespace=namespace,
                      resource=resource, subresource=subresource, name=name)


def forbidden(user: UserInfo, attrs: Attributes, reason: str = "") -> StoreError:
    """The 403 the API server answers a denied request with, in its words (``responsewriters.Forbidden``)."""
    if not attrs.resource_request:
        text = f'User "{user.username}" cannot {attrs.verb} path "{attrs.path}"'
    elif attrs.namespace:
        text = (f'User "{user.username}" cannot {attrs.verb} resource "{attrs.combined_resource}" in API group '
                f'"{attrs.api_group}" in the namespace "{attrs.namespace}"')
    else:
        text = (f'User "{user.username}" cannot {attrs.verb} resource "{attrs.combined_resource}" in API group '
                f'"{attrs.api_group}" at the cluster scope')
    if reason:
        text += f": {reason}"
    if not attrs.resource_request:
        return StoreError(403, "Forbidden", f"forbidden: {text}", {})
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    message = f'{qualified} "{attrs.name}" is forbidden: {text}' if attrs.name else f"{qualified} is forbidden: {text}"
    return StoreError(403, "Forbidden", message, {"name": attrs.name, "group": attrs.api_group,
                                                  "kind": attrs.resource})


# --------------------------------------------------------------------------------------------- rules


def _has(values: Any, wanted: str) -> bool:
    return isinstance(values, list) and (wanted in values or "*" in values)


def rule_allows(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    """Whether one PolicyRule allows the request (``rbac.RuleAllows``).

    Examples:
        >>> rule = {"verbs": ["get", "create"], "apiGroups": [""], "resources": ["pods/exec"]}
        >>> rule_allows(rule, Attributes("create", resource="pods", subresource="exec", name="p"))
        True
        >>> rule_allows(rule, Attributes("create", resource="pods", name="p"))
        False
        >>> rule_allows({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}, Attributes("get", "/apis/apps",
        ...             resource_request=False))
        True
    """
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        for url in rule.get("nonResourceURLs") or []:
            if not isinstance(url, str):
                continue
            if url in ("*", attrs.path) or (url.endswith("*") and attrs.path.startswith(url.rstrip("*"))):
                return True
        return False
    if not _has(rule.get("apiGroups"), attrs.api_group):
        return False
    resources = rule.get("resources") or []
    combined = attrs.combined_resource
    if not any(r in ("*", combined) or (attrs.subresource and r == f"*/{attrs.subresource}") for r in resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _subject_matches(subject: Mapping[str, Any], user: UserInfo, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.username)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.username == f"system:serviceaccount:{namespace}:{name}"
    return False


def _describe_subject(subject: Mapping[str, Any], binding_namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("name")}/{subject.get("namespace") or binding_namespace}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


@dataclass(frozen=True)
class Grant:
    """Rules a binding gives a user, and how to say where they came from."""

    source: str
    rules: tuple[Mapping[str, Any], ...]


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _breakdown(rule: Mapping[str, Any]) -> list[dict[str, list[str]]]:
    """One rule per verb, group, resource (and name), or per verb and URL (``rbac/validation.BreakdownRule``)."""
    verbs = _strings(rule.get("verbs"))
    out: list[dict[str, list[str]]] = []
    for group in _strings(rule.get("apiGroups")):
        for resource in _strings(rule.get("resources")):
            for verb in verbs:
                names = _strings(rule.get("resourceNames"))
                out += ([{"verbs": [verb], "apiGroups": [group], "resources": [resource], "resourceNames": [n]}
                         for n in names] if names else
                        [{"verbs": [verb], "apiGroups": [group], "resources": [resource]}])
    for url in _strings(rule.get("nonResourceURLs")):
        out += [{"verbs": [verb], "nonResourceURLs": [url]} for verb in verbs]
    return out


def _covers(owner: Mapping[str, Any], sub: Mapping[str, list[str]]) -> bool:
    """Whether ``owner`` covers the atomic rule ``sub`` (``rbac/validation.ruleCovers``)."""
    have_verbs, have_groups = _strings(owner.get("verbs")), _strings(owner.get("apiGroups"))
    if "*" not in have_verbs and not set(sub["verbs"]) <= set(have_verbs):
        return False
    if "nonResourceURLs" in sub:
        urls = _strings(owner.get("nonResourceURLs"))
        return all(any(u in ("*", url) or (u.endswith("*") and url.startswith(u[:-1])) for u in urls)
                   for url in sub["nonResourceURLs"])
    if "*" not in have_groups and not set(sub["apiGroups"]) <= set(have_groups):
        return False
    resources = _strings(owner.get("resources"))
    for resource in sub["resources"]:
        if "*" in resources or resource in resources:
            continue
        if "/" not in resource or "*/" + resource.split("/", 1)[1] not in resources:
            return False
    names = _strings(owner.get("resourceNames"))
    return not names or ("resourceNames" in sub and set(sub["resourceNames"]) <= set(names))


def _describe_rule(rule: Mapping[str, list[str]]) -> str:
    """A rule as the API server prints one in an escalation error: ``{APIGroups:[""], Resources:["secrets"], ...}``."""
    def quoted(values: list[str]) -> str:
        return "[" + " ".join(f'"{v}"' for v in values) + "]"

    parts = [(label, rule[key]) for label, key in (("APIGroups", "apiGroups"), ("Resources", "resources"),
                                                   ("ResourceNames", "resourceNames"),
                                                   ("NonResourceURLs", "nonResourceURLs"), ("Verbs", "verbs"))
             if key in rule]
    return "{" + ", ".join(f"{label}:{quoted(values)}" for label, values in parts) + "}"


# --------------------------------------------------------------------------------------------- tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Auth:
    """Authentication (the admin token, ServiceAccount tokens) and RBAC authorization over one store.

    Args:
        store: where the accounts and the RBAC objects are read.
        admin_token: the kubeconfig's token (a cluster administrator).
    """

    store: Store
    admin_token: str
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    key_id: str = field(default_factory=lambda: secrets.token_hex(8))

    # -- authentication
    def authenticate(self, token: str) -> UserInfo | None:
        """Who ``token`` is, or None (answer 401)."""
        if not token:
            return None
        if hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return ADMIN
        claims = self._verified_claims(token)
        if claims is None:
            return None
        k8s = claims.get("kubernetes.io")
        if not isinstance(k8s, dict):
            return None
        namespace, account = k8s.get("namespace"), k8s.get("serviceaccount")
        if not isinstance(namespace, str) or not isinstance(account, dict):
            return None
        name, uid = account.get("name"), account.get("uid")
        if not isinstance(name, str) or not isinstance(uid, str):
            return None
        stored = self.store.get(SERVICE_ACCOUNTS, namespace, name)
        if stored is None or stored["metadata"].get("uid") != uid:
            return None  # the account was deleted (perhaps made again): its tokens are dead
        for kind, res in BOUND_KINDS.items():
            bound = k8s.get(kind.lower())
            if isinstance(bound, dict):
                obj = self.store.get(res, namespace, str(bound.get("name")))
                if obj is None or obj["metadata"].get("uid") != bound.get("uid"):
                    return None
        return UserInfo(f"system:serviceaccount:{namespace}:{name}",
                        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
                        uid=uid, credential_id=str(claims.get("jti", "")))

    def _verified_claims(self, token: str) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        signed = f"{parts[0]}.{parts[1]}".encode()
        expected = hmac.new(self.key, signed, hashlib.sha256).digest()
        try:
            given = _unb64(parts[2])
            claims = json.loads(_unb64(parts[1]))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(expected, given) or not isinstance(claims, dict):
            return None
        now = datetime.now(UTC).timestamp()
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(exp, int | float) or not isinstance(nbf, int | float) or not nbf - 60 <= now < exp:
            return None
        audiences = claims.get("aud")
        if not isinstance(audiences, list) or API_AUDIENCE not in audiences:
            return None
        return claims

    def token_request(self, namespace: str, name: str, body: Obj) -> Obj:
        """Answer a TokenRequest for ServiceAccount ``namespace/name``: the token and when it expires.

        Raises:
            StoreError: 404 without the account (or the bound object), 422 for a bad ``spec``, 409 when the
                bound object's uid is not the one given.
        """
        account = self.store.get(SERVICE_ACCOUNTS, namespace, name)
        if account is None:
            raise not_found(SERVICE_ACCOUNTS, name)
        spec: Obj = body["spec"] if isinstance(body.get("spec"), dict) else {}
        seconds = spec.get("expirationSeconds", DEFAULT_EXPIRATION)
        errors: list[FieldError] = []
        if seconds < MIN_EXPIRATION:
            errors.append(invalid_value("spec.expirationSeconds", seconds,
                                        "may not specify a duration less than 10 minutes"))
        elif seconds > MAX_EXPIRATION:
            errors.append(invalid_value("spec.expirationSeconds", seconds,
                                        "may not specify a duration larger than 2^32 seconds"))
        audiences = list(spec.get("audiences") or [API_AUDIENCE])
        bound_ref = spec.get("boundObjectRef")
        bound_claim: dict[str, Any] = {}
        if bound_ref:
            kind = bound_ref.get("kind")
            if kind not in BOUND_KINDS:
                errors.append(not_supported("spec.boundObjectRef.kind", kind, tuple(sorted(BOUND_KINDS))))
            elif not bound_ref.get("name"):
                errors.append(required("spec.boundObjectRef.name"))
        if errors:
            raise invalid("TokenRequest", name, errors)
        if bound_ref:
            res = BOUND_KINDS[bound_ref["kind"]]
            obj = self.store.get(res, namespace, bound_ref["name"])
            if obj is None:
                raise not_found(res, bound_ref["name"])
            uid = obj["metadata"]["uid"]
            if bound_ref.get("uid") and bound_ref["uid"] != uid:
                raise StoreError(409, "Conflict", f"the UID in the bound object reference ({bound_ref['uid']}) "
                                 f"does not match the UID in record ({uid}). The object might have been deleted "
                                 "and then recreated", {"name": bound_ref["name"], "kind": res.plural})
            bound_claim = {bound_ref["kind"].lower(): {"name": bound_ref["name"], "uid": uid}}
        now = datetime.now(UTC).replace(microsecond=0)
        expires = now + timedelta(seconds=int(seconds))
        jti = str(uuid.uuid4())
        claims = {
            "aud": audiences, "exp": int(expires.timestamp()), "iat": int(now.timestamp()), "iss": API_AUDIENCE,
            "jti": jti, "nbf": int(now.timestamp()),
            "kubernetes.io": {"namespace": namespace,
                              "serviceaccount": {"name": name, "uid": account["metadata"]["uid"]}, **bound_claim},
            "sub": f"system:serviceaccount:{namespace}:{name}",
        }
        return {
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": _stamp(now)},
            "spec": {"audiences": audiences, "expirationSeconds": int(seconds),
                     "boundObjectRef": bound_ref or None},
            "status": {"token": self.sign(claims), "expirationTimestamp": _stamp(expires)},
        }

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A JWT of ``claims`` signed with this API server's key (HS256): what :meth:`authenticate` accepts."""
        header = _b64(json.dumps({"alg": "HS256", "kid": self.key_id}, separators=(",", ":")).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64(hmac.new(self.key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}"

    # -- authorization
    def grants(self, user: UserInfo, namespace: str) -> Iterator[Grant]:
        """The rules each binding that names ``user`` gives it: cluster-wide ones, then ``namespace``'s."""
        for binding in self.store.list(CLUSTER_ROLE_BINDINGS):
            yield from self._grant(binding, user, "", "ClusterRoleBinding")
        if namespace:
            for binding in self.store.list(ROLE_BINDINGS, namespace):
                yield from self._grant(binding, user, namespace, "RoleBinding")

    def _grant(self, binding: Obj, user: UserInfo, namespace: str, binding_kind: str) -> Iterator[Grant]:
        subjects = binding.get("subjects") or []
        subject = next((s for s in subjects if isinstance(s, dict) and _subject_matches(s, user, namespace)), None)
        if subject is None:
            return
        ref = binding.get("roleRef") or {}
        kind, role_name = ref.get("kind"), str(ref.get("name", ""))
        role = (self.store.get(ROLES, namespace, role_name) if kind == "Role" and namespace else
                self.store.get(CLUSTER_ROLES, "", role_name) if kind == "ClusterRole" else None)
        if role is None:
            return
        bname = binding["metadata"]["name"] + (f"/{namespace}" if namespace else "")
        source = (f'{binding_kind} "{bname}" of {kind} "{role_name}" to '
                  f"{_describe_subject(subject, namespace)}")
        yield Grant(source, tuple(r for r in role.get("rules") or [] if isinstance(r, dict)))

    def authorize(self, user: UserInfo, attrs: Attributes) -> Decision:
        """Whether ``user`` may do ``attrs``: administrators always, others as their bindings' rules say."""
        if user.is_admin:
            return Decision(True, 'RBAC: allowed by ClusterRoleBinding "cluster-admin" of ClusterRole '
                                  '"cluster-admin" to Group "system:masters"')
        for grant in self.grants(user, attrs.namespace if attrs.resource_request else ""):
            if any(rule_allows(rule, attrs) for rule in grant.rules):
                return Decision(True, f"RBAC: allowed by {grant.source}")
        return Decision(False)

    def check(self, user: UserInfo, attrs: Attributes) -> None:
        """Raise the 403 of a request ``user`` may not make (a WebSocket GET of exec also needs ``create``)."""
        if not self.authorize(user, attrs).allowed:
            raise forbidden(user, attrs)
        if attrs.subresource in UPGRADE_SUBRESOURCES and attrs.verb == "get" and attrs.resource == "pods":
            create = Attributes("create", attrs.path, True, attrs.api_group, attrs.api_version, attrs.namespace,
                                attrs.resource, attrs.subresource, attrs.name)
            if not self.authorize(user, create).allowed:
                raise forbidden(user, create)

    # -- escalation: nobody grants what they do not hold
    def check_escalation(self, user: UserInfo, res: Resource, obj: Obj, namespace: str) -> None:
        """Refuse a Role or binding that would give more than ``user`` holds (``rbac/validation.ConfirmNoEscalation``).

        A Role (ClusterRole) may hold only rules the user has in that namespace (cluster-wide), unless the user may
        ``escalate`` roles; a binding may name only a role whose rules the user has there, unless the user may
        ``bind`` it. Administrators pass.

        Raises:
            StoreError: 403 Forbidden naming the rules not held.
        """
        if user.is_admin or res.group != GROUP:
            return
        name = str((obj.get("metadata") or {}).get("name") or "")
        ns = namespace if res.namespaced else ""
        if res.kind in ("Role", "ClusterRole"):
            if self.authorize(user, Attributes("escalate", api_group=GROUP, resource=res.plural, namespace=ns,
                                               name=name)).allowed:
                return
            wanted = [r for r in obj.get("rules") or [] if isinstance(r, dict)]
        else:
            ref = obj.get("roleRef") or {}
            plural = "roles" if ref.get("kind") == "Role" else "clusterroles"
            if self.authorize(user, Attributes("bind", api_group=GROUP, resource=plural, namespace=ns,
                                               name=str(ref.get("name") or ""))).allowed:
                return
            role = (self.store.get(ROLES, ns, str(ref.get("name") or "")) if ref.get("kind") == "Role" else
                    self.store.get(CLUSTER_ROLES, "", str(ref.get("name") or "")))
            if role is None:
                raise StoreError(403, "Forbidden", f'{res.plural}.{GROUP} "{name}" is forbidden: '
                                 f'{ref.get("kind")}.{GROUP} "{ref.get("name")}" not found',
                                 {"name": name, "group": GROUP, "kind": res.plural})
            wanted = [r for r in role.get("rules") or [] if isinstance(r, dict)]
        held = [rule for grant in self.grants(user, ns) for rule in grant.rules]
        missing = [atom for rule in wanted for atom in _breakdown(rule) if not any(_covers(h, atom) for h in held)]
        if missing:
            groups = " ".join(f'"{g}"' for g in user.groups)
            listed = "\n".join(_describe_rule(r) for r in missing)
            raise StoreError(403, "Forbidden", f'{res.plural}.{GROUP} "{name}" is forbidden: user '
                             f'"{user.username}" (groups=[{groups}]) is attempting to grant RBAC permissions not '
                             f"currently held:\n{listed}", {"name": name, "group": GROUP, "kind": res.plural})

    # -- the self-reviews, for a user who is not an administrator
    def review(self, res: Resource, body: Obj, user: UserInfo) -> Obj:
        """Answer a SelfSubjectAccessReview, SelfSubjectRulesReview or SelfSubjectReview for ``user``."""
        obj: Obj = {"kind": res.kind, "apiVersion": res.api_version,
                    "metadata": {"creationTimestamp": None, **(body.get("metadata") or {})}}
        spec: Obj = body["spec"] if isinstance(body.get("spec"), dict) else {}
        if res.kind == "SelfSubjectReview":
            obj["status"] = {"userInfo": user.as_dict()}
            return obj
        obj["spec"] = spec
        if res.kind == "SelfSubjectRulesReview":
            namespace = str(spec.get("namespace") or "")
            resource_rules: list[Obj] = []
            non_resource_rules: list[Obj] = []
            for grant in self.grants(user, namespace):
                for rule in grant.rules:
                    if rule.get("nonResourceURLs"):
                        non_resource_rules.append({"verbs": list(rule.get("verbs") or []),
                                                   "nonResourceURLs": list(rule["nonResourceURLs"])})
                    else:
                        resource_rules.append({k: list(rule.get(k) or []) for k in
                                               ("verbs", "apiGroups", "resources", "resourceNames")
                                               if rule.get(k) or k != "resourceNames"})
            obj["status"] = {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                             "incomplete": False}
            return obj
        resource_attrs: Obj = spec.get("resourceAttributes") or {}
        non_resource_attrs: Obj = spec.get("nonResourceAttributes") or {}
        if not resource_attrs and not non_resource_attrs:
            raise invalid(res.kind, "", [required("spec.resourceAttributes", "exactly one of "
                                                  "nonResourceAttributes or resourceAttributes must be specified")])
        if resource_attrs:
            a = resource_attrs
            attrs = Attributes(str(a.get("verb") or ""), api_group=str(a.get("group") or ""),
                               api_version=str(a.get("version") or ""), namespace=str(a.get("namespace") or ""),
                               resource=str(a.get("resource") or ""), subresource=str(a.get("subresource") or ""),
                               name=str(a.get("name") or ""))
        else:
            attrs = Attributes(str(non_resource_attrs.get("verb") or ""),
                               str(non_resource_attrs.get("path") or ""), resource_request=False)
        decision = self.authorize(user, attrs)
        obj["status"] = {"allowed": decision.allowed, **({"reason": decision.reason} if decision.reason else {})}
        return obj


# --------------------------------------------------------------------------------------------- objects


def _path_segment_errors(field_path: str, value: str) -> list[FieldError]:
    """RBAC names are path segments (``system:discovery`` is one), not DNS names (``ValidateRBACName``)."""
    if value in (".", ".."):
        return [invalid_value(field_path, value, f"may not be '{value}'")]
    return [invalid_value(field_path, value, f"may not contain '{c}'") for c in ("/", "%") if c in value]


def _rule_errors(rule: Mapping[str, Any], namespaced: bool, at: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if not rule.get("verbs"):
        errors.append(required(f"{at}.verbs", "verbs must contain at least one value"))
    if rule.get("nonResourceURLs"):
        if namespaced:
            errors.append(invalid_value(f"{at}.nonResourceURLs", rule["nonResourceURLs"],
                                        "namespaced rules cannot apply to non-resource URLs"))
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            errors.append(invalid_value(f"{at}.nonResourceURLs", rule["nonResourceURLs"],
                                        "rules cannot apply to both regular resources and non-resource URLs"))
        return errors
    if not rule.get("apiGroups"):
        errors.append(required(f"{at}.apiGroups", "resource rules must supply at least one api group"))
    if not rule.get("resources"):
        errors.append(required(f"{at}.resources", "resource rules must supply at least one resource"))
    return errors


def _binding_errors(obj: Obj, namespaced: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    ref = obj.get("roleRef")
    if not isinstance(ref, dict):
        return [required("roleRef")]
    if ref.get("apiGroup") != GROUP:
        errors.append(not_supported("roleRef.apiGroup", ref.get("apiGroup"), (GROUP,)))
    kinds = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    if ref.get("kind") not in kinds:
        errors.append(not_supported("roleRef.kind", ref.get("kind"), kinds))
    if not ref.get("name"):
        errors.append(required("roleRef.name"))
    else:
        errors += _path_segment_errors("roleRef.name", ref["name"])
    for i, subject in enumerate(obj.get("subjects") or []):
        at = f"subjects[{i}]"
        kind, name = subject.get("kind"), subject.get("name")
        if not name:
            errors.append(required(f"{at}.name"))
        if kind == "ServiceAccount":
            if subject.get("apiGroup"):
                errors.append(not_supported(f"{at}.apiGroup", subject["apiGroup"], ("",)))
            if not namespaced and not subject.get("namespace"):
                errors.append(required(f"{at}.namespace"))
        elif kind in ("User", "Group"):
            if subject.get("apiGroup") != GROUP:
                errors.append(not_supported(f"{at}.apiGroup", subject.get("apiGroup"), (GROUP,)))
        else:
            errors.append(not_supported(f"{at}.kind", kind, ("ServiceAccount", "User", "Group")))
    return errors


def default_object(kind: str, obj: Obj) -> None:
    """Fill what the v1 defaulting fills: the API group of a binding's roleRef and of its User/Group subjects."""
    if kind not in ("RoleBinding", "ClusterRoleBinding"):
        return
    ref = obj.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = GROUP
    for subject in obj.get("subjects") or []:
        if isinstance(subject, dict) and not subject.get("apiGroup") and subject.get("kind") in ("User", "Group"):
            subject["apiGroup"] = GROUP


def check_object(kind: str, obj: Obj, old: Obj | None = None) -> None:
    """Default and validate a Role, ClusterRole, RoleBinding or ClusterRoleBinding (``old``: on update).

    Raises:
        ValidationError: 422 ``Invalid`` with a cause per field (a binding's ``roleRef`` cannot change).
    """
    default_object(kind, obj)
    meta = obj.get("metadata") or {}
    errors = _path_segment_errors("metadata.name", str(meta.get("name") or ""))
    if kind in ("Role", "ClusterRole"):
        for i, rule in enumerate(obj.get("rules") or []):
            errors += _rule_errors(rule, kind == "Role", f"rules[{i}]")
    else:
        errors += _binding_errors(obj, kind == "RoleBinding")
        if old is not None and old.get("roleRef") != obj.get("roleRef"):
            errors.append(invalid_value("roleRef", obj.get("roleRef"), "cannot change roleRef"))
    if errors:
        raise invalid(f"{kind}.{GROUP}", str(meta.get("name") or ""), errors)


def bootstrap_objects() -> list[tuple[Resource, Obj]]:
    """The RBAC objects a fresh cluster has (a small part of the real bootstrap policy)."""
    meta = {"labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}}

    def role(name: str, rules: list[Obj]) -> tuple[Resource, Obj]:
        return CLUSTER_ROLES, {"metadata": {"name": name, **json.loads(json.dumps(meta))}, "rules": rules}

    def binding(name: str, group: str) -> tuple[Resource, Obj]:
        return CLUSTER_ROLE_BINDINGS, {
            "metadata": {"name": name, **json.loads(json.dumps(meta))},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": group}]}

    discovery = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
                 "/version", "/version/"]
    return [
        role("cluster-admin", [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                               {"verbs": ["*"], "nonResourceURLs": ["*"]}]),
        binding("cluster-admin", "system:masters"),
        role("system:discovery", [{"verbs": ["get"], "nonResourceURLs": discovery}]),
        binding("system:discovery", "system:authenticated"),
        role("system:basic-user", [
            {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
            {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}]),
        binding("system:basic-user", "system:authenticated"),
    ]
