"""Kubernetes protobuf request bodies, decoded to the JSON objects the API server's JSON path reads.

Since client-go 1.32 every typed client of a built-in kind sends its body as
``application/vnd.kubernetes.protobuf`` (``kubectl create deployment|namespace|configmap|secret|service ...``),
and a 415 does not make kubectl retry with JSON. This module turns such a body into the dict the JSON body would
have given, so the rest of the API server never sees protobuf.

The wire format: the magic bytes ``k8s\\x00``, then a ``runtime.Unknown`` message {1 typeMeta {1 apiVersion,
2 kind}, 2 raw, 3 contentEncoding, 4 contentType} whose ``raw`` is the object's own message. The messages are
described below by field number in :data:`MESSAGES` (from the upstream ``generated.proto`` files of
``k8s.io/api`` and ``k8s.io/apimachinery``), only for the kinds the sandbox can be sent. Go writes every
non-pointer field; the result is what Go's JSON encoder writes for the same object, i.e. what the command would
have sent as JSON: zero scalars (``""``, ``0``, ``false``) are dropped as ``omitempty`` drops them, except in
pointer fields where an explicit zero means something (``replicas: 0``); message fields are kept even when empty
(``resources: {}``, ``status: {}``); a zero time (JSON ``null``) is dropped.

Errors:
    ProtobufError: the body is not a well-formed protobuf envelope (a 400 for the client).
    UnsupportedKindError(ProtobufError): well-formed, but of a kind, or with a field, this decoder does not know
        (a 415 naming it: the data would otherwise be dropped silently).

Example::

    >>> obj = decode(body)            # body: what kubectl create namespace demo sent
    >>> obj["kind"], obj["metadata"]
    ('Namespace', {'name': 'demo'})
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from .store import StoreError

MAGIC: Final = b"k8s\x00"
CONTENT_TYPE: Final = "application/vnd.kubernetes.protobuf"
MAX_DEPTH: Final = 64

# Wire types.
VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    """A protobuf request body that cannot be read (truncated, bad wire type, not UTF-8 where text is due)."""


class UnsupportedKindError(ProtobufError):
    """A well-formed body of a kind (or with a field) that the sandbox's decoder does not know."""

    def __init__(self, message: str, *, api_version: str, kind: str) -> None:
        super().__init__(message)
        self.api_version = api_version
        self.kind = kind


def is_protobuf(content_type: str) -> bool:
    """Whether a request's media type (without parameters) is Kubernetes protobuf."""
    return content_type.split(";", 1)[0].strip().lower() == CONTENT_TYPE


@dataclass(frozen=True)
class Unknown:
    """The ``runtime.Unknown`` envelope: which object ``raw`` holds, and how it is encoded."""

    api_version: str
    kind: str
    raw: bytes
    content_encoding: str = ""
    content_type: str = ""


# -- the wire --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WireField:
    """One field as it appears on the wire: its number, wire type and raw value (int or bytes)."""

    number: int
    wire_type: int
    value: int | bytes


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint longer than 10 bytes")


def parse_fields(buf: bytes) -> list[WireField]:
    """Split one message's bytes into its fields, in wire order.

    Raises:
        ProtobufError: truncated input, field number 0, or a wire type Kubernetes never writes (groups).
    """
    fields: list[WireField] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        value: int | bytes
        if wire_type == VARINT:
            value, pos = _varint(buf, pos)
        elif wire_type == LEN:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ProtobufError(f"field {number} says {size} bytes, {len(buf) - pos} remain")
            value, pos = buf[pos:pos + size], pos + size
        elif wire_type in (FIXED64, FIXED32):
            width = 8 if wire_type == FIXED64 else 4
            if pos + width > len(buf):
                raise ProtobufError(f"truncated fixed-width field {number}")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        else:
            raise ProtobufError(f"field {number} has wire type {wire_type}, which Kubernetes never writes")
        fields.append(WireField(number, wire_type, value))
    return fields


def decode_unknown(body: bytes) -> Unknown:
    """Read the ``k8s\\x00`` magic and the ``runtime.Unknown`` envelope around an object.

    Raises:
        ProtobufError: no magic, or a malformed envelope.
    """
    if not body.startswith(MAGIC):
        raise ProtobufError("a Kubernetes protobuf body starts with the 4 bytes 'k8s\\x00'; this one does not")
    api_version = kind = encoding = ctype = ""
    raw = b""
    for f in parse_fields(body[len(MAGIC):]):
        if f.number == 1:
            for t in parse_fields(_bytes(f, "typeMeta")):
                if t.number == 1:
                    api_version = _text(_bytes(t, "typeMeta.apiVersion"), "typeMeta.apiVersion")
                elif t.number == 2:
                    kind = _text(_bytes(t, "typeMeta.kind"), "typeMeta.kind")
        elif f.number == 2:
            raw = _bytes(f, "raw")
        elif f.number == 3:
            encoding = _text(_bytes(f, "contentEncoding"), "contentEncoding")
        elif f.number == 4:
            ctype = _text(_bytes(f, "contentType"), "contentType")
    return Unknown(api_version, kind, raw, encoding, ctype)


def _bytes(f: WireField, where: str) -> bytes:
    if not isinstance(f.value, bytes):
        raise ProtobufError(f"{where}: expected a length-delimited field, got wire type {f.wire_type}")
    return f.value


def _text(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtobufError(f"{where}: not UTF-8 text") from exc


# -- the schema ------------------------------------------------------------------------------------------------
#
# A message is {field number: (json name, type, flags)}. Types: "string", "int" (int32/int64 varint), "bool",
# "bytes" (base64 in JSON), "double", a special type ("Time", "MicroTime", "Quantity", "IntOrString",
# "RawExtension", "FieldsV1", "StringList": a message {1 repeated string} that is a plain list in JSON, like
# UserInfo's ExtraValue), "map:<value type>" (string keys), or another message's name.
# Flags: "*" repeated, "!" a pointer field whose zero value is kept, "^" an inlined embed whose fields are
# flattened into the parent (Probe.handler, Volume.volumeSource, localObjectReference).

SCALARS: Final = frozenset({"string", "int", "bool", "bytes", "double"})
SPECIAL: Final = frozenset({"Time", "MicroTime", "Quantity", "IntOrString", "RawExtension", "FieldsV1",
                            "StringList"})

Field = tuple[str, str, str]
Message = dict[int, Field]


def _m(**spec: str) -> Message:
    """Build a message from ``name="number type [flags]"`` keywords (a compact transcription of a .proto)."""
    out: Message = {}
    for name, desc in spec.items():
        parts = desc.split()
        out[int(parts[0])] = (name, parts[1], parts[2] if len(parts) > 2 else "")
    return out


MESSAGES: dict[str, Message] = {
    # k8s.io/apimachinery/pkg/apis/meta/v1
    "ObjectMeta": _m(name="1 string", generateName="2 string", namespace="3 string", selfLink="4 string",
                     uid="5 string", resourceVersion="6 string", generation="7 int", creationTimestamp="8 Time",
                     deletionTimestamp="9 Time", deletionGracePeriodSeconds="10 int !", labels="11 map:string",
                     annotations="12 map:string", ownerReferences="13 OwnerReference *",
                     finalizers="14 string *", managedFields="17 ManagedFieldsEntry *"),
    "OwnerReference": _m(kind="1 string", name="3 string", uid="4 string", apiVersion="5 string",
                         controller="6 bool !", blockOwnerDeletion="7 bool !"),
    "ManagedFieldsEntry": _m(manager="1 string", operation="2 string", apiVersion="3 string", time="4 Time",
                             fieldsType="6 string", fieldsV1="7 FieldsV1", subresource="8 string"),
    "LabelSelector": _m(matchLabels="1 map:string", matchExpressions="2 LabelSelectorRequirement *"),
    "LabelSelectorRequirement": _m(key="1 string", operator="2 string", values="3 string *"),
    "Condition": _m(type="1 string", status="2 string", observedGeneration="3 int", lastTransitionTime="4 Time",
                    reason="5 string", message="6 string"),
    "DeleteOptions": _m(gracePeriodSeconds="1 int !", preconditions="2 Preconditions", orphanDependents="3 bool !",
                        propagationPolicy="4 string !", dryRun="5 string *"),
    "Preconditions": _m(uid="1 string !", resourceVersion="2 string !"),
    # k8s.io/api/core/v1
    "Namespace": _m(metadata="1 ObjectMeta", spec="2 NamespaceSpec", status="3 NamespaceStatus"),
    "NamespaceSpec": _m(finalizers="1 string *"),
    "NamespaceStatus": _m(phase="1 string", conditions="2 NamespaceCondition *"),
    "NamespaceCondition": _m(type="1 string", status="2 string", lastTransitionTime="4 Time", reason="5 string",
                             message="6 string"),
    "ConfigMap": _m(metadata="1 ObjectMeta", data="2 map:string", binaryData="3 map:bytes", immutable="4 bool !"),
    "Secret": _m(metadata="1 ObjectMeta", data="2 map:bytes", type="3 string", stringData="4 map:string",
                 immutable="5 bool !"),
    "ServiceAccount": _m(metadata="1 ObjectMeta", secrets="2 ObjectReference *",
                         imagePullSecrets="3 LocalObjectReference *", automountServiceAccountToken="4 bool !"),
    "ObjectReference": _m(kind="1 string", namespace="2 string", name="3 string", uid="4 string",
                          apiVersion="5 string", resourceVersion="6 string", fieldPath="7 string"),
    "LocalObjectReference": _m(name="1 string"),
    "Service": _m(metadata="1 ObjectMeta", spec="2 ServiceSpec", status="3 ServiceStatus"),
    "ServiceSpec": _m(ports="1 ServicePort *", selector="2 map:string", clusterIP="3 string", type="4 string",
                      externalIPs="5 string *", sessionAffinity="7 string", loadBalancerIP="8 string",
                      loadBalancerSourceRanges="9 string *", externalName="10 string",
                      externalTrafficPolicy="11 string", healthCheckNodePort="12 int",
                      publishNotReadyAddresses="13 bool", sessionAffinityConfig="14 SessionAffinityConfig",
                      ipFamilyPolicy="17 string !", clusterIPs="18 string *", ipFamilies="19 string *",
                      allocateLoadBalancerNodePorts="20 bool !", loadBalancerClass="21 string !",
                      internalTrafficPolicy="22 string !", trafficDistribution="23 string !"),
    "ServicePort": _m(name="1 string", protocol="2 string", port="3 int", targetPort="4 IntOrString",
                      nodePort="5 int", appProtocol="6 string !"),
    "SessionAffinityConfig": _m(clientIP="1 ClientIPConfig"),
    "ClientIPConfig": _m(timeoutSeconds="1 int !"),
    "ServiceStatus": _m(loadBalancer="1 LoadBalancerStatus", conditions="2 Condition *"),
    "LoadBalancerStatus": _m(ingress="1 LoadBalancerIngress *"),
    "LoadBalancerIngress": _m(ip="1 string", hostname="2 string", ipMode="3 string !"),
    "Pod": _m(metadata="1 ObjectMeta", spec="2 PodSpec", status="3 PodStatus"),
    "PodStatus": _m(phase="1 string", message="3 string", reason="4 string", hostIP="5 string",
                    podIP="6 string", startTime="7 Time", qosClass="9 string"),
    "PodTemplateSpec": _m(metadata="1 ObjectMeta", spec="2 PodSpec"),
    "PodSpec": _m(volumes="1 Volume *", containers="2 Container *", restartPolicy="3 string",
                  terminationGracePeriodSeconds="4 int !", activeDeadlineSeconds="5 int !", dnsPolicy="6 string",
                  nodeSelector="7 map:string", serviceAccountName="8 string", serviceAccount="9 string",
                  nodeName="10 string", hostNetwork="11 bool", hostPID="12 bool", hostIPC="13 bool",
                  securityContext="14 PodSecurityContext", imagePullSecrets="15 LocalObjectReference *",
                  hostname="16 string", subdomain="17 string", schedulerName="19 string",
                  initContainers="20 Container *", automountServiceAccountToken="21 bool !",
                  tolerations="22 Toleration *", hostAliases="23 HostAlias *", priorityClassName="24 string",
                  priority="25 int !", dnsConfig="26 PodDNSConfig", shareProcessNamespace="27 bool !",
                  readinessGates="28 PodReadinessGate *", runtimeClassName="29 string !",
                  enableServiceLinks="30 bool !", preemptionPolicy="31 string !", overhead="32 map:Quantity",
                  topologySpreadConstraints="33 TopologySpreadConstraint *", affinity="18 Affinity",
                  setHostnameAsFQDN="35 bool !", os="36 PodOS", hostUsers="37 bool !",
                  schedulingGates="38 PodSchedulingGate *"),
    "Affinity": _m(nodeAffinity="1 NodeAffinity", podAffinity="2 PodAffinity", podAntiAffinity="3 PodAffinity"),
    "NodeAffinity": _m(requiredDuringSchedulingIgnoredDuringExecution="1 NodeSelector",
                       preferredDuringSchedulingIgnoredDuringExecution="2 PreferredSchedulingTerm *"),
    "NodeSelector": _m(nodeSelectorTerms="1 NodeSelectorTerm *"),
    "NodeSelectorTerm": _m(matchExpressions="1 NodeSelectorRequirement *",
                           matchFields="2 NodeSelectorRequirement *"),
    "NodeSelectorRequirement": _m(key="1 string", operator="2 string", values="3 string *"),
    "PreferredSchedulingTerm": _m(weight="1 int", preference="2 NodeSelectorTerm"),
    # PodAntiAffinity has the same fields as PodAffinity.
    "PodAffinity": _m(requiredDuringSchedulingIgnoredDuringExecution="1 PodAffinityTerm *",
                      preferredDuringSchedulingIgnoredDuringExecution="2 WeightedPodAffinityTerm *"),
    "PodAffinityTerm": _m(labelSelector="1 LabelSelector", namespaces="2 string *", topologyKey="3 string",
                          namespaceSelector="4 LabelSelector", matchLabelKeys="5 string *",
                          mismatchLabelKeys="6 string *"),
    "WeightedPodAffinityTerm": _m(weight="1 int", podAffinityTerm="2 PodAffinityTerm"),
    "TopologySpreadConstraint": _m(maxSkew="1 int", topologyKey="2 string", whenUnsatisfiable="3 string",
                                   labelSelector="4 LabelSelector", minDomains="5 int !",
                                   nodeAffinityPolicy="6 string !", nodeTaintsPolicy="7 string !",
                                   matchLabelKeys="8 string *"),
    "PodSecurityContext": _m(seLinuxOptions="1 SELinuxOptions", runAsUser="2 int !", runAsNonRoot="3 bool !",
                             supplementalGroups="4 int *", fsGroup="5 int !", runAsGroup="6 int !",
                             sysctls="7 Sysctl *", windowsOptions="8 WindowsSecurityContextOptions",
                             fsGroupChangePolicy="9 string !", seccompProfile="10 SeccompProfile",
                             appArmorProfile="11 AppArmorProfile"),
    "WindowsSecurityContextOptions": _m(gmsaCredentialSpecName="1 string !", gmsaCredentialSpec="2 string !",
                                        runAsUserName="3 string !", hostProcess="4 bool !"),
    "AppArmorProfile": _m(type="1 string", localhostProfile="2 string !"),
    "SELinuxOptions": _m(user="1 string", role="2 string", type="3 string", level="4 string"),
    "Sysctl": _m(name="1 string", value="2 string"),
    "SeccompProfile": _m(type="1 string", localhostProfile="2 string !"),
    "Toleration": _m(key="1 string", operator="2 string", value="3 string", effect="4 string",
                     tolerationSeconds="5 int !"),
    "HostAlias": _m(ip="1 string", hostnames="2 string *"),
    "PodDNSConfig": _m(nameservers="1 string *", searches="2 string *", options="3 PodDNSConfigOption *"),
    "PodDNSConfigOption": _m(name="1 string", value="2 string !"),
    "PodReadinessGate": _m(conditionType="1 string"),
    "PodOS": _m(name="1 string"),
    "PodSchedulingGate": _m(name="1 string"),
    "Container": _m(name="1 string", image="2 string", command="3 string *", args="4 string *",
                    workingDir="5 string", ports="6 ContainerPort *", env="7 EnvVar *",
                    resources="8 ResourceRequirements", volumeMounts="9 VolumeMount *", livenessProbe="10 Probe",
                    readinessProbe="11 Probe", lifecycle="12 Lifecycle", terminationMessagePath="13 string",
                    imagePullPolicy="14 string", securityContext="15 SecurityContext", stdin="16 bool",
                    stdinOnce="17 bool", tty="18 bool", envFrom="19 EnvFromSource *",
                    terminationMessagePolicy="20 string", startupProbe="22 Probe",
                    resizePolicy="23 ContainerResizePolicy *", restartPolicy="24 string !"),
    "ContainerPort": _m(name="1 string", hostPort="2 int", containerPort="3 int", protocol="4 string",
                        hostIP="5 string"),
    "EnvVar": _m(name="1 string", value="2 string", valueFrom="3 EnvVarSource"),
    "EnvVarSource": _m(fieldRef="1 ObjectFieldSelector", resourceFieldRef="2 ResourceFieldSelector",
                       configMapKeyRef="3 KeySelector", secretKeyRef="4 KeySelector"),
    "ObjectFieldSelector": _m(apiVersion="1 string", fieldPath="2 string"),
    "ResourceFieldSelector": _m(containerName="1 string", resource="2 string", divisor="3 Quantity"),
    "KeySelector": _m(localObjectReference="1 LocalObjectReference ^", key="2 string", optional="3 bool !"),
    "EnvFromSource": _m(prefix="1 string", configMapRef="2 EnvSource", secretRef="3 EnvSource"),
    "EnvSource": _m(localObjectReference="1 LocalObjectReference ^", optional="2 bool !"),
    "ResourceRequirements": _m(limits="1 map:Quantity", requests="2 map:Quantity", claims="3 ResourceClaim *"),
    "ResourceClaim": _m(name="1 string", request="2 string"),
    "ContainerResizePolicy": _m(resourceName="1 string", restartPolicy="2 string"),
    "VolumeMount": _m(name="1 string", readOnly="2 bool", mountPath="3 string", subPath="4 string",
                      mountPropagation="5 string !", subPathExpr="6 string", recursiveReadOnly="7 string !"),
    "Probe": _m(handler="1 ProbeHandler ^", initialDelaySeconds="2 int", timeoutSeconds="3 int",
                periodSeconds="4 int", successThreshold="5 int", failureThreshold="6 int",
                terminationGracePeriodSeconds="7 int !"),
    "ProbeHandler": _m(exec="1 ExecAction", httpGet="2 HTTPGetAction", tcpSocket="3 TCPSocketAction",
                       grpc="4 GRPCAction"),
    "ExecAction": _m(command="1 string *"),
    "HTTPGetAction": _m(path="1 string", port="2 IntOrString", host="3 string", scheme="4 string",
                        httpHeaders="5 HTTPHeader *"),
    "HTTPHeader": _m(name="1 string", value="2 string"),
    "TCPSocketAction": _m(port="1 IntOrString", host="2 string"),
    "GRPCAction": _m(port="1 int", service="2 string !"),
    "Lifecycle": _m(postStart="1 LifecycleHandler", preStop="2 LifecycleHandler"),
    "LifecycleHandler": _m(exec="1 ExecAction", httpGet="2 HTTPGetAction", tcpSocket="3 TCPSocketAction",
                           sleep="4 SleepAction"),
    "SleepAction": _m(seconds="1 int"),
    "SecurityContext": _m(capabilities="1 Capabilities", privileged="2 bool !", seLinuxOptions="3 SELinuxOptions",
                          runAsUser="4 int !", runAsNonRoot="5 bool !", readOnlyRootFilesystem="6 bool !",
                          allowPrivilegeEscalation="7 bool !", runAsGroup="8 int !", procMount="9 string !",
                          windowsOptions="10 WindowsSecurityContextOptions", seccompProfile="11 SeccompProfile",
                          appArmorProfile="12 AppArmorProfile"),
    "Capabilities": _m(add="1 string *", drop="2 string *"),
    "Volume": _m(name="1 string", volumeSource="2 VolumeSource ^"),
    # Which source a volume has is its meaning: an empty `emptyDir: {}` is kept ("!").
    "VolumeSource": _m(hostPath="1 HostPathVolumeSource !", emptyDir="2 EmptyDirVolumeSource !",
                       secret="6 SecretVolumeSource !", persistentVolumeClaim="10 PVCVolumeSource !",
                       downwardAPI="16 DownwardAPIVolumeSource !", configMap="19 ConfigMapVolumeSource !"),
    "HostPathVolumeSource": _m(path="1 string", type="2 string !"),
    "EmptyDirVolumeSource": _m(medium="1 string", sizeLimit="2 Quantity !"),
    "SecretVolumeSource": _m(secretName="1 string", items="2 KeyToPath *", defaultMode="3 int !",
                             optional="4 bool !"),
    "ConfigMapVolumeSource": _m(localObjectReference="1 LocalObjectReference ^", items="2 KeyToPath *",
                                defaultMode="3 int !", optional="4 bool !"),
    "KeyToPath": _m(key="1 string", path="2 string", mode="3 int !"),
    "PVCVolumeSource": _m(claimName="1 string", readOnly="2 bool"),
    "DownwardAPIVolumeSource": _m(items="1 DownwardAPIVolumeFile *", defaultMode="2 int !"),
    "DownwardAPIVolumeFile": _m(path="1 string", fieldRef="2 ObjectFieldSelector",
                                resourceFieldRef="3 ResourceFieldSelector", mode="4 int !"),
    # k8s.io/api/apps/v1
    "Deployment": _m(metadata="1 ObjectMeta", spec="2 DeploymentSpec", status="3 DeploymentStatus"),
    "DeploymentSpec": _m(replicas="1 int !", selector="2 LabelSelector", template="3 PodTemplateSpec",
                         strategy="4 DeploymentStrategy", minReadySeconds="5 int", revisionHistoryLimit="6 int !",
                         paused="7 bool", progressDeadlineSeconds="9 int !"),
    "DeploymentStrategy": _m(type="1 string", rollingUpdate="2 RollingUpdateDeployment"),
    "RollingUpdateDeployment": _m(maxUnavailable="1 IntOrString !", maxSurge="2 IntOrString !"),
    "DeploymentStatus": _m(observedGeneration="1 int", replicas="2 int", updatedReplicas="3 int",
                           availableReplicas="4 int", unavailableReplicas="5 int",
                           conditions="6 DeploymentCondition *", readyReplicas="7 int", collisionCount="8 int !",
                           terminatingReplicas="9 int !"),
    "DeploymentCondition": _m(type="1 string", status="2 string", reason="4 string", message="5 string",
                              lastUpdateTime="6 Time", lastTransitionTime="7 Time"),
    "ReplicaSet": _m(metadata="1 ObjectMeta", spec="2 ReplicaSetSpec", status="3 ReplicaSetStatus"),
    "ReplicaSetSpec": _m(replicas="1 int !", selector="2 LabelSelector", template="3 PodTemplateSpec",
                         minReadySeconds="4 int"),
    "ReplicaSetStatus": _m(replicas="1 int", fullyLabeledReplicas="2 int", observedGeneration="3 int",
                           readyReplicas="4 int", availableReplicas="5 int",
                           conditions="6 ReplicaSetCondition *", terminatingReplicas="7 int !"),
    "ReplicaSetCondition": _m(type="1 string", status="2 string", lastTransitionTime="3 Time", reason="4 string",
                              message="5 string"),
    # k8s.io/api/authorization/v1 (kubectl auth can-i)
    "SelfSubjectAccessReview": _m(metadata="1 ObjectMeta", spec="2 SelfSubjectAccessReviewSpec",
                                  status="3 SubjectAccessReviewStatus"),
    "SelfSubjectAccessReviewSpec": _m(resourceAttributes="1 ResourceAttributes",
                                      nonResourceAttributes="2 NonResourceAttributes"),
    "ResourceAttributes": _m(namespace="1 string", verb="2 string", group="3 string", version="4 string",
                             resource="5 string", subresource="6 string", name="7 string"),
    "NonResourceAttributes": _m(path="1 string", verb="2 string"),
    "SubjectAccessReviewStatus": _m(allowed="1 bool", reason="2 string", evaluationError="3 string",
                                    denied="4 bool"),
    "SelfSubjectRulesReview": _m(metadata="1 ObjectMeta", spec="2 SelfSubjectRulesReviewSpec",
                                 status="3 SubjectRulesReviewStatus"),
    "SubjectRulesReviewStatus": _m(resourceRules="1 ResourceRule *", nonResourceRules="2 NonResourceRule *",
                                   incomplete="3 bool", evaluationError="4 string"),
    "ResourceRule": _m(verbs="1 string *", apiGroups="2 string *", resources="3 string *",
                       resourceNames="4 string *"),
    "NonResourceRule": _m(verbs="1 string *", nonResourceURLs="2 string *"),
    "SelfSubjectRulesReviewSpec": _m(namespace="1 string"),
    # k8s.io/api/authentication/v1 (kubectl create token, kubectl auth whoami)
    "TokenRequest": _m(metadata="1 ObjectMeta", spec="2 TokenRequestSpec", status="3 TokenRequestStatus"),
    "TokenRequestSpec": _m(audiences="1 string *", boundObjectRef="3 BoundObjectReference",
                           expirationSeconds="4 int !"),
    "BoundObjectReference": _m(kind="1 string", apiVersion="2 string", name="3 string", uid="4 string"),
    "TokenRequestStatus": _m(token="1 string", expirationTimestamp="2 Time"),
    "SelfSubjectReview": _m(metadata="1 ObjectMeta", status="2 SelfSubjectReviewStatus"),
    "SelfSubjectReviewStatus": _m(userInfo="1 UserInfo"),
    "UserInfo": _m(username="1 string", uid="2 string", groups="3 string *", extra="4 map:StringList"),
    # k8s.io/api/rbac/v1 (kubectl create role|clusterrole|rolebinding|clusterrolebinding)
    "Role": _m(metadata="1 ObjectMeta", rules="2 PolicyRule *"),
    "ClusterRole": _m(metadata="1 ObjectMeta", rules="2 PolicyRule *", aggregationRule="3 AggregationRule"),
    "PolicyRule": _m(verbs="1 string *", apiGroups="2 string *", resources="3 string *",
                     resourceNames="4 string *", nonResourceURLs="5 string *"),
    "AggregationRule": _m(clusterRoleSelectors="1 LabelSelector *"),
    "RoleBinding": _m(metadata="1 ObjectMeta", subjects="2 Subject *", roleRef="3 RoleRef"),
    "ClusterRoleBinding": _m(metadata="1 ObjectMeta", subjects="2 Subject *", roleRef="3 RoleRef"),
    "Subject": _m(kind="1 string", apiGroup="2 string", name="3 string", namespace="4 string"),
    "RoleRef": _m(apiGroup="1 string", kind="2 string", name="3 string"),
}
# Per message, the JSON keys kept even when zero, as Go's JSON encoder keeps them: pointer fields ("!") and every
# message-typed field (a struct is never "empty" to `omitempty`: `resources: {}`, `strategy: {}`, `status: {}`).
KEEP: dict[str, frozenset[str]] = {
    name: frozenset(key for key, typ, flags in fields.values()
                    if "!" in flags or (typ not in SCALARS and not typ.startswith("map:") and "*" not in flags))
    for name, fields in MESSAGES.items()
}

# (apiVersion, kind) -> top-level message. DeleteOptions is accepted under any apiVersion: clients differ.
KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Secret"): "Secret",
    ("v1", "ServiceAccount"): "ServiceAccount",
    ("v1", "Service"): "Service",
    ("v1", "Pod"): "Pod",
    ("apps/v1", "Deployment"): "Deployment",
    ("apps/v1", "ReplicaSet"): "ReplicaSet",
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): "SelfSubjectRulesReview",
    ("authentication.k8s.io/v1", "TokenRequest"): "TokenRequest",
    ("authentication.k8s.io/v1", "SelfSubjectReview"): "SelfSubjectReview",
    ("rbac.authorization.k8s.io/v1", "Role"): "Role",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "ClusterRole",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "ClusterRoleBinding",
}



def supported_kinds() -> list[str]:
    """``apiVersion/kind`` of every kind :func:`decode` reads, sorted (for messages and docs)."""
    return sorted(f"{v}/{k}" for v, k in KINDS)


# -- decoding --------------------------------------------------------------------------------------------------

class _Ctx:
    """What an error message needs: the object being decoded."""

    def __init__(self, api_version: str, kind: str) -> None:
        self.api_version = api_version
        self.kind = kind

    def unknown_field(self, number: int, message: str, path: str) -> UnsupportedKindError:
        where = f"field {number} of {message} at {path}" if path else f"field {number}"
        return UnsupportedKindError(
            f"cannot decode {where} of {self.api_version} {self.kind} from protobuf: the "
            "sandbox's decoder does not know it. Send the object as JSON instead (kubectl create -f FILE.yaml, "
            "or kubectl create ... --dry-run=client -o yaml | kubectl apply -f -)",
            api_version=self.api_version, kind=self.kind)


def decode(body: bytes) -> dict[str, Any]:
    """Decode a whole ``application/vnd.kubernetes.protobuf`` body to its JSON object (apiVersion, kind first).

    Raises:
        ProtobufError: a malformed body.
        UnsupportedKindError: a kind (or a field) this decoder does not know.
    """
    unknown = decode_unknown(body)
    return decode_object(unknown)


def decode_object(unknown: Unknown) -> dict[str, Any]:
    """Decode the object an :class:`Unknown` envelope carries."""
    api_version, kind = unknown.api_version, unknown.kind
    if not kind:
        raise ProtobufError("the protobuf envelope names no kind (typeMeta.kind is empty)")
    if unknown.content_encoding:
        raise UnsupportedKindError(f"cannot decode {api_version} {kind}: content encoding "
                                   f"{unknown.content_encoding!r} is not supported; send it as JSON",
                                   api_version=api_version, kind=kind)
    message = KINDS.get((api_version, kind)) or ("DeleteOptions" if kind == "DeleteOptions" else None)
    if message is None:
        raise UnsupportedKindError(
            f"cannot decode {api_version} {kind} from protobuf: the sandbox reads protobuf bodies of "
            f"{', '.join(supported_kinds())} only. Send it as JSON instead (kubectl create -f FILE.yaml)",
            api_version=api_version, kind=kind)
    ctx = _Ctx(api_version, kind)
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    obj.update(_message(unknown.raw, message, ctx, "", 0))
    return obj


def _message(buf: bytes, name: str, ctx: _Ctx, path: str, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise ProtobufError(f"messages nested deeper than {MAX_DEPTH} levels at {path}")
    schema = MESSAGES[name]
    out: dict[str, Any] = {}
    inlined: set[str] = set()
    for f in parse_fields(buf):
        spec = schema.get(f.number)
        if spec is None:
            if _is_zero_wire(f):
                continue  # a zero value of a field we do not know: JSON would omit it too
            raise ctx.unknown_field(f.number, name, path)
        key, typ, flags = spec
        here = f"{path}.{key}" if path else key
        if typ.startswith("map:"):
            k, v = _map_entry(_bytes(f, here), typ[4:], ctx, here, depth)
            out.setdefault(key, {})[k] = v
            continue
        if "*" in flags and typ in ("int", "bool", "double") and f.wire_type == LEN:
            out.setdefault(key, []).extend(_packed(_bytes(f, here), typ, here))
            continue
        value = _value(f, typ, ctx, here, depth)
        if "^" in flags:
            if not isinstance(value, dict):
                raise ProtobufError(f"{here}: an inlined field must be a message")
            out.update(value)  # already pruned by its own message's rules
            inlined.update(value)
        elif "*" in flags:
            out.setdefault(key, []).append(value)
        else:
            out[key] = value  # proto2: the last occurrence wins
    keep = KEEP[name]
    return {k: v for k, v in out.items() if v is not None and (k in keep or k in inlined or not _is_empty(v))}


def _is_empty(v: Any) -> bool:
    return v is None or v == "" or v is False or (isinstance(v, int) and not isinstance(v, bool) and v == 0) \
        or v == {} or v == []


def _is_zero_wire(f: WireField) -> bool:
    return f.value in (0, b"")


def _value(f: WireField, typ: str, ctx: _Ctx, path: str, depth: int) -> Any:
    if typ == "int":
        return _signed(_varint_value(f, path))
    if typ == "bool":
        return _varint_value(f, path) != 0
    if typ == "double":
        if f.wire_type != FIXED64 or not isinstance(f.value, int):
            raise ProtobufError(f"{path}: expected a 64-bit field")
        return struct.unpack("<d", f.value.to_bytes(8, "little"))[0]
    raw = _bytes(f, path)
    if typ == "string":
        return _text(raw, path)
    if typ == "bytes":
        return base64.b64encode(raw).decode("ascii")
    if typ in SPECIAL:
        return _special(raw, typ, path)
    return _message(raw, typ, ctx, path, depth + 1)


def _varint_value(f: WireField, path: str) -> int:
    if f.wire_type != VARINT or not isinstance(f.value, int):
        raise ProtobufError(f"{path}: expected a varint, got wire type {f.wire_type}")
    return f.value


def _signed(v: int) -> int:
    """Go's int32/int64 fields are written as 64-bit two's complement varints."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _packed(raw: bytes, typ: str, path: str) -> list[Any]:
    values: list[Any] = []
    pos = 0
    while pos < len(raw):
        if typ == "double":
            if pos + 8 > len(raw):
                raise ProtobufError(f"{path}: truncated packed doubles")
            values.append(struct.unpack("<d", raw[pos:pos + 8])[0])
            pos += 8
            continue
        v, pos = _varint(raw, pos)
        values.append(_signed(v) if typ == "int" else v != 0)
    return values


def _map_entry(raw: bytes, value_type: str, ctx: _Ctx, path: str, depth: int) -> tuple[str, Any]:
    key = ""
    value: Any = None
    for f in parse_fields(raw):
        if f.number == 1:
            key = _text(_bytes(f, path), f"{path} (a key)")
        elif f.number == 2:
            value = _value(f, value_type, ctx, f"{path}[{key}]", depth)
        elif not _is_zero_wire(f):
            raise ProtobufError(f"{path}: a map entry with field {f.number}")
    if value is None:  # an absent value is the zero value of its type, which a map keeps
        value = {"string": "", "bytes": "", "int": 0, "bool": False, "Quantity": "0"}.get(value_type, {})
    return key, value


def _special(raw: bytes, typ: str, path: str) -> Any:
    fields = parse_fields(raw)
    if typ in ("Time", "MicroTime"):
        seconds = nanos = 0
        for f in fields:
            if f.number == 1:
                seconds = _signed(_varint_value(f, path))
            elif f.number == 2:
                nanos = _signed(_varint_value(f, path))
        if seconds == 0 and nanos == 0:
            return None  # Go's zero time: JSON null, dropped
        try:
            when = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ProtobufError(f"{path}: time {seconds} s is out of range") from exc
        if typ == "Time":
            return when.strftime("%Y-%m-%dT%H:%M:%SZ")
        if not 0 <= nanos < 1_000_000_000:
            raise ProtobufError(f"{path}: nanos {nanos} is out of range")
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos // 1000:06d}Z"
    if typ == "Quantity":
        text = ""
        for f in fields:
            if f.number == 1:
                text = _text(_bytes(f, path), path)
        return text or "0"
    if typ == "IntOrString":
        kind, int_val, str_val = 0, 0, ""
        for f in fields:
            if f.number == 1:
                kind = _varint_value(f, path)
            elif f.number == 2:
                int_val = _signed(_varint_value(f, path))
            elif f.number == 3:
                str_val = _text(_bytes(f, path), path)
        return str_val if kind == 1 else int_val
    if typ == "StringList":
        return [_text(_bytes(f, path), path) for f in fields if f.number == 1]
    # RawExtension and FieldsV1: field 1 holds the JSON text.
    data = b""
    for f in fields:
        if f.number == 1:
            data = _bytes(f, path)
    if not data:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtobufError(f"{path}: a {typ} that is not JSON") from exc



def decode_request(body: bytes) -> dict[str, Any]:
    """:func:`decode` for the API server: errors become the ``Status`` a client sees (400, or 415 naming the kind).

    Raises:
        StoreError: 400 BadRequest for a malformed body, 415 UnsupportedMediaType for a kind or field not known.
    """
    try:
        return decode(body)
    except UnsupportedKindError as exc:
        group = exc.api_version.split("/", 1)[0] if "/" in exc.api_version else ""
        details = {"kind": exc.kind, **({"group": group} if group else {})}
        raise StoreError(415, "UnsupportedMediaType", str(exc), details) from exc
    except ProtobufError as exc:
        raise StoreError(400, "BadRequest", f"the request body could not be decoded: {exc}") from exc
