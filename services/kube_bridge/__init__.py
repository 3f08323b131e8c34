"""The planner's Kubernetes bridge: Argo Rollouts resources in (as commands over NATS), Argo's status out.

`watch` lists and watches any resource and survives 410 Gone; `translate` turns a resource's change
into planner commands; `status` shapes the planner's state as Argo's RolloutStatus; `bridge` runs them.
"""
