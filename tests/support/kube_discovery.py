"""Discovery documents (/api, /apis, /apis/{group}, /apis/{group}/{version}) built from the resource table."""

from __future__ import annotations

from typing import Any

from tests.support import kube_errors as errors
from tests.support.kube_resources import ALL_VERBS, ResourceTable

Obj = dict[str, Any]


def api_group(table: ResourceTable, group: str) -> Obj:
    versions = table.groups().get(group)
    if not versions or not group:
        raise errors.resource_not_found()
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": listed,
        "preferredVersion": listed[0],
    }


def api_group_list(table: ResourceTable) -> Obj:
    groups = [api_group(table, g) for g in table.groups() if g]
    for g in groups:
        del g["kind"], g["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(table: ResourceTable, group: str, version: str) -> Obj:
    resources: list[Obj] = []
    for rt in table.all():
        if rt.group != group or version not in rt.versions:
            continue
        resources.append(
            {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ALL_VERBS,
                **({"shortNames": rt.short_names} if rt.short_names else {}),
            }
        )
        sub_verbs = ["get", "patch", "update"]
        if rt.status:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": sub_verbs,
                }
            )
        if rt.scale:
            resources.append(
                {
                    "name": f"{rt.plural}/scale",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": sub_verbs,
                }
            )
    if not resources:
        raise errors.resource_not_found()
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
