"""Every NATS subject, stream, consumer and KV bucket name of nats-rollouts, in one place.

Nothing else in the code base spells a subject string: services import the builders below.
The public contract (commands, events) is documented in README.md; the internal subjects
between services are documented in docs/subjects.md.
"""

from __future__ import annotations

import re

PREFIX = "rollouts"

# --- public: commands (users, CLI, any NATS client) ---------------------------------------
COMMANDS_STREAM = "ROLLOUTS_COMMANDS"
COMMANDS_WILDCARD = f"{PREFIX}.cmd.>"
COMMAND_VERBS = (
    "promote",
    "abort",
    "retry",
    "pause",
    "resume",
    "apply",
    "undo",
    "set-image",
    "restart",
    "delete",
)

# --- public: events (every state transition) ---------------------------------------------
EVENTS_STREAM = "ROLLOUTS_EVENTS"
EVENTS_WILDCARD = f"{PREFIX}.events.>"

# --- internal: desired state, last value per rollout (level-triggered) -------------------
TRAFFIC_STREAM = "ROLLOUTS_TRAFFIC"
TRAFFIC_WILDCARD = f"{PREFIX}.traffic.desired.>"
SCALE_STREAM = "ROLLOUTS_SCALE"
SCALE_WILDCARD = f"{PREFIX}.scale.desired.>"
ENDPOINTS_STREAM = "ROLLOUTS_ENDPOINTS"
ENDPOINTS_WILDCARD = f"{PREFIX}.endpoints.>"

# --- internal: feedback to the planner (traffic confirmed, scale observed, analysis) ------
FEEDBACK_STREAM = "ROLLOUTS_FEEDBACK"
FEEDBACK_WILDCARD = f"{PREFIX}.feedback.>"

# --- internal: analysis work queue, shared by every analyzer process ---------------------
ANALYSIS_WORK_STREAM = "ROLLOUTS_ANALYSIS_WORK"
ANALYSIS_WORK_WILDCARD = f"{PREFIX}.analysis.work.>"

# --- consumers ----------------------------------------------------------------------------
PLANNER_COMMANDS_CONSUMER = "planner-commands"
PLANNER_FEEDBACK_CONSUMER = "planner-feedback"
ANALYZER_CONSUMER = "analyzers"

# --- KV buckets ---------------------------------------------------------------------------
ROLLOUTS_BUCKET = "rollouts_state"
TEMPLATES_BUCKET = "rollouts_templates"
ANALYSIS_RUNS_BUCKET = "rollouts_analysis_runs"
LEASES_BUCKET = "rollouts_leases"

_TOKEN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


class SubjectError(ValueError):
    """A subject (or a token destined for one) is malformed."""


def check_token(value: str, what: str) -> str:
    """Kubernetes names may hold dots, NATS tokens may not: we reject dots in names."""
    if not value or "." in value or not _TOKEN.match(value) or len(value) > 253:
        raise SubjectError(f"{what} {value!r} is not a valid name (letters, digits, '-' and '_' only)")
    return value


def command(namespace: str, name: str, verb: str) -> str:
    return f"{PREFIX}.cmd.{namespace}.{name}.{verb}"


def events(namespace: str, name: str) -> str:
    return f"{PREFIX}.events.{namespace}.{name}"


def traffic_desired(namespace: str, name: str) -> str:
    return f"{PREFIX}.traffic.desired.{namespace}.{name}"


def scale_desired(namespace: str, name: str) -> str:
    return f"{PREFIX}.scale.desired.{namespace}.{name}"


def endpoints(namespace: str, name: str) -> str:
    return f"{PREFIX}.endpoints.{namespace}.{name}"


def feedback(kind: str, namespace: str, name: str) -> str:
    """kind: traffic | scale | analysis."""
    return f"{PREFIX}.feedback.{kind}.{namespace}.{name}"


def analysis_work(kind: str, namespace: str, name: str) -> str:
    """kind: start | measure."""
    return f"{PREFIX}.analysis.work.{kind}.{namespace}.{name}"


def ping(service: str) -> str:
    """Core-NATS request subject every running service answers (readiness checks of `up` and tests)."""
    return f"{PREFIX}.ping.{service}"


def run_record_key(run_id: str) -> str:
    """Key of an AnalysisRun record in the analysis-runs bucket."""
    return f"run.{run_id}"


def run_stop_key(run_id: str) -> str:
    """Key of the marker telling analyzers a run was stopped (the rollout moved on)."""
    return f"stop.{run_id}"


def rollout_key(namespace: str, name: str) -> str:
    """KV key of a rollout's planner state (KV keys allow dots; our tokens have none)."""
    return f"{namespace}.{name}"


def template_key(namespace: str | None, name: str) -> str:
    """KV key of an (Cluster)AnalysisTemplate; cluster-scoped ones live under `_cluster`."""
    return f"{namespace or '_cluster'}.{name}"


class ParsedCommand:
    __slots__ = ("name", "namespace", "verb")

    def __init__(self, namespace: str, name: str, verb: str) -> None:
        self.namespace = namespace
        self.name = name
        self.verb = verb


def parse_command(subject: str) -> ParsedCommand:
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != PREFIX or parts[1] != "cmd":
        raise SubjectError(f"subject {subject!r}: expected {PREFIX}.cmd.<namespace>.<name>.<verb>")
    _, _, namespace, name, verb = parts
    if verb not in COMMAND_VERBS:
        raise SubjectError(f"subject {subject!r}: unknown verb {verb!r} (one of {', '.join(COMMAND_VERBS)})")
    return ParsedCommand(namespace, name, verb)


def parse_rollout_subject(subject: str, depth: int) -> tuple[str, str]:
    """The last two tokens of a per-rollout subject, `depth` tokens long."""
    parts = subject.split(".")
    if len(parts) != depth:
        raise SubjectError(f"subject {subject!r}: expected {depth} tokens")
    return parts[-2], parts[-1]
