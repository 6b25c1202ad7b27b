"""junit.xml: the run's gates as a CI system shows test results, one test case per gate.

Built from summary.json's dict. The cases:
- a run that succeeded: one case per gate, a failed gate a <failure> whose message carries the
  numbers (left, operator, right, and the difference interval when runner.core.stats added one);
- a run that succeeded with no gates: one passing case, "run succeeded", so the suite is never
  empty (CI dashboards show an empty suite as "no tests", which reads as a broken job);
- a run that failed or was interrupted: one case "run" with an <error> carrying the error, and each
  declared gate as a <skipped> case (not evaluated), so the gate names still show in CI.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from runner.outputs.summary import gate_detail

# Characters XML 1.0 cannot hold, even escaped; ElementTree writes them raw (a gate may end in a vertical
# tab, an error may quote a server's bytes), which leaves a file no CI parser reads.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_safe(text: str) -> str:
    return NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else "\ufffd", text)


def _number(value: Any) -> str:
    return "nan" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def failure_message(gate: dict[str, Any]) -> str:
    """One line a CI page shows: which gate, and the numbers that made it fail."""
    message = f"{gate['gate']}: {_number(gate['left'])} {gate.get('op') or '?'} {_number(gate['right'])} is false"
    detail = gate_detail(gate)
    return f"{message}; {detail}" if detail else message


def render_junit(summary: dict[str, Any]) -> str:
    suite = ET.Element(
        "testsuite", name=f"specrun.{summary['name']}", timestamp=str(summary["timings"]["started"] or "")
    )
    classname = f"specrun.{summary['name']}"
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}

    def case(name: str) -> ET.Element:
        counts["tests"] += 1
        return ET.SubElement(suite, "testcase", name=name, classname=classname, time="0")

    properties = ET.SubElement(suite, "properties")
    for key in ("run_id", "status", "spec_hash", "task", "primary_metric", "eval_size"):
        ET.SubElement(properties, "property", name=key, value=str(summary[key]))
    if summary["status"] != "succeeded":
        error = ET.SubElement(case("run"), "error", message=f"run {summary['status']}: {summary.get('error') or ''}")
        error.text = summary.get("error") or summary["status"]
        counts["errors"] += 1
        for text in summary["gates_declared"]:
            ET.SubElement(case(text), "skipped", message=f"not evaluated: the run {summary['status']}")
            counts["skipped"] += 1
    elif not summary["gates"]:
        case("run succeeded")
    for gate in summary["gates"] if summary["status"] == "succeeded" else []:
        element = case(gate["gate"])
        gate_properties = ET.SubElement(element, "properties")
        for key in ("left", "op", "right", "passed"):
            ET.SubElement(gate_properties, "property", name=key, value=str(gate.get(key)))
        if not gate["passed"]:
            failure = ET.SubElement(element, "failure", message=failure_message(gate), type="GateFailed")
            failure.text = failure_message(gate)
            counts["failures"] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", str(summary["timings"].get("wall_seconds") or 0))
    root = ET.Element("testsuites", name="specrun")
    root.append(suite)
    for key, value in counts.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + _xml_safe(ET.tostring(root, encoding="unicode")) + "\n"
