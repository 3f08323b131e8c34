"""Load every YAML/JSON file of an Argo Rollouts corpus and report what our spec loader accepts.

Usage: .venv/bin/python bench/argo_corpus_compat.py [CORPUS_DIR]   (default ../shared/argo-corpus)

For lint/valid* and lint/invalid* files the expectation is checked: valid files must load,
invalid files must be rejected. Argo's linter also checks Services/Ingresses referenced from the
Rollout, which we do not; such files are reported as "cross-object" misses.
"""

from __future__ import annotations

import sys
from pathlib import Path

from shared.specs import OtherObject, SpecError, load_documents

# Argo lint fixtures that are invalid only because of objects other than the Rollout
# (Service selectors, Ingress backends...), which this loader deliberately does not check.
CROSS_OBJECT_INVALID = {
    "invalid-service-labels.yml": "Service selectors do not match the Rollout's pod labels",
    "invalid-ping-pong.yml": "ping/pong Service selectors do not match the Rollout's pod labels",
    "invalid-ingress-smi-multi.yml": "Ingress/Service wiring across documents",
}


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "../shared/argo-corpus")
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
    accepted = rejected = ours = expect_ok = expect_bad = 0
    mismatches: list[str] = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            docs = load_documents(path.read_bytes())
        except SpecError as exc:
            rejected += 1
            status, detail = "REJECTED", f"{exc.obj or ''} {exc}".strip().replace("\n", " | ")
        else:
            accepted += 1
            mine = [d for d in docs if not isinstance(d, OtherObject)]
            ours += len(mine)
            kinds = ", ".join(f"{d.kind}/{d.metadata.name}" for d in mine) or "no Argo objects"
            status, detail = "ok", kinds
        expectation = ""
        name = path.name
        if rel.startswith("lint/") and name.startswith("valid"):
            if status == "ok":
                expect_ok += 1
            else:
                expectation = "  <-- EXPECTED VALID"
                mismatches.append(rel)
        elif rel.startswith("lint/") and name.startswith("invalid"):
            if status == "REJECTED":
                expect_bad += 1
            elif name in CROSS_OBJECT_INVALID:
                expectation = (
                    f"  <-- expected invalid (cross-object, not checked: {CROSS_OBJECT_INVALID[name]})"
                )
                mismatches.append(f"{rel} (cross-object)")
            else:
                expectation = "  <-- EXPECTED INVALID"
                mismatches.append(rel)
        print(f"{status:8} {rel}: {detail}{expectation}")
    lint_valid = sum(1 for p in files if p.parent.name == "lint" and p.name.startswith("valid"))
    lint_invalid = sum(1 for p in files if p.parent.name == "lint" and p.name.startswith("invalid"))
    print(
        f"SUMMARY files={len(files)} accepted={accepted} rejected={rejected} argo_objects={ours} "
        f"lint_valid_ok={expect_ok}/{lint_valid} lint_invalid_rejected={expect_bad}/{lint_invalid} "
        f"mismatches={len(mismatches)}"
    )
    for item in mismatches:
        print(f"MISMATCH {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
