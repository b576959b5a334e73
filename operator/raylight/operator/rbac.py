"""The Kubernetes permissions the operator needs, in one place.

The Helm chart renders its ClusterRole from this list (a test compares the two), so a new API call in
the operator means a new rule here first. Pure data: no kopf or kubernetes imports.

What each rule is for:
- raylight.io modeldeployments/pipelines/finetunes: Kopf watches them and patches them (finalizers, its
  progress annotations); status through the subresource; update on their finalizers because the
  children's owner references set blockOwnerDeletion (enforced by OwnerReferencesPermissionEnforcement).
- ray.io rayservices: one per ModelDeployment and one per Pipeline agent; created, patched in place
  when they drift, watched so a deleted or hand-edited one is restored; their status is read for ours.
  Deleted only under upgradeStrategy Recreate, when a model's Ray cluster changes (KubeRay's strategy None
  never replaces a running cluster); otherwise owner references let the garbage collector remove them.
- ray.io rayjobs/raycronjobs and core configmaps: a Pipeline's ingestion plan, its runs (a RayJob per plan
  checksum, watched so its status becomes the Pipeline's; superseded runs are deleted) and, with
  spec.schedule, the RayCronJob that starts runs. A FineTune's training plan and run, the same way.
- batch cronjobs: get and delete only, to remove the ingestion CronJob a release before RayJobs created.
- core pods: list only, to read a finished ingestion run's summary (its submitter's termination message:
  counts, what it skipped and why) into the Pipeline's status.
- batch jobs: the weight cache's prefetch (spec.cache), one per pinned plan, created, watched so a deleted one
  is run again, and a superseded one still running deleted; never patched (a Job's template is immutable).
- core persistentvolumeclaims: get only, to check that the claim spec.cache names exists before its prefetch.
- core secrets: get only, to read the Qdrant API key a Pipeline names (spec.vectorStore.qdrant.
  apiKeySecret) when the operator creates or drops its collection. Never listed or watched.
- core events: Kopf posts one per transition.
- gateway.networking.k8s.io gatewayclasses: get only, to check that the GatewayClass an Incremental upgrade
  names exists.
- apiextensions customresourcedefinitions and core namespaces: Kopf scans which resources exist and,
  with namespace patterns, which namespaces match; the operator's start-up check reads the KubeRay and
  Gateway API CRDs it needs (get).
- kopf.dev peerings: only when running with peering (the default); `--standalone` needs none.
The validating webhook configuration is created by the chart, not by Kopf, so no admissionregistration.
"""

from __future__ import annotations

from typing import Any

_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (("raylight.io",), ("modeldeployments", "pipelines", "finetunes"), ("get", "list", "watch", "patch")),
    (("raylight.io",), ("modeldeployments/status", "pipelines/status", "finetunes/status"), ("get", "patch")),
    (("raylight.io",), ("modeldeployments/finalizers", "pipelines/finalizers", "finetunes/finalizers"),
     ("update",)),
    (("ray.io",), ("rayservices",), ("get", "list", "watch", "create", "patch", "delete")),
    (("ray.io",), ("rayjobs",), ("get", "list", "watch", "create", "patch", "delete")),
    (("ray.io",), ("raycronjobs",), ("get", "list", "watch", "create", "patch", "delete")),
    (("batch",), ("cronjobs",), ("get", "delete")),
    (("batch",), ("jobs",), ("get", "list", "watch", "create", "delete")),
    (("",), ("persistentvolumeclaims",), ("get",)),
    (("",), ("configmaps",), ("get", "list", "watch", "create", "patch")),
    (("",), ("pods",), ("list",)),
    (("",), ("secrets",), ("get",)),
    (("",), ("events",), ("create",)),
    (("",), ("namespaces",), ("list", "watch")),
    (("apiextensions.k8s.io",), ("customresourcedefinitions",), ("get", "list", "watch")),
    (("gateway.networking.k8s.io",), ("gatewayclasses",), ("get",)),
    (("kopf.dev",), ("clusterkopfpeerings", "kopfpeerings"), ("get", "list", "watch", "patch")),
)


def required_rules() -> list[dict[str, Any]]:
    """ClusterRole rules (apiGroups, resources, verbs), in a stable order."""
    return [{"apiGroups": list(groups), "resources": list(resources), "verbs": list(verbs)}
            for groups, resources, verbs in _RULES]


# The chart's pre-delete hook (raylight.operator.uninstall), under its own ServiceAccount, by policy:
# - both: delete the chart's ValidatingWebhookConfiguration (resourceNames: that one only), and list the
#   objects it releases;
# - Delete: delete ModelDeployments and Pipelines (the running operator finalizes them);
# - Orphan: scale the operator's Deployment to zero (resourceNames: that one only), list pods in the release
#   namespace to see it stopped, and patch ModelDeployments and Pipelines to remove the operator's finalizer.
_UNINSTALL: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "Delete": (("raylight.io", "modeldeployments", ("list", "delete")),
               ("raylight.io", "pipelines", ("list", "delete"))),
    "Orphan": (("raylight.io", "modeldeployments", ("list", "patch")),
               ("raylight.io", "pipelines", ("list", "patch")),
               ("apps", "deployments", ("patch",)), ("", "pods", ("list",))),
}
UNINSTALL_CLUSTER_SCOPED = ("admissionregistration.k8s.io", "validatingwebhookconfigurations", ("delete",))


def uninstall_rules(policy: str, webhook: bool = True) -> list[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the uninstall hook needs for `policy` (Delete or Orphan)."""
    rules = [*_UNINSTALL[policy], *([UNINSTALL_CLUSTER_SCOPED] if webhook else [])]
    return [(group, resource, verb) for group, resource, verbs in rules for verb in verbs]
