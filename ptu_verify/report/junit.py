"""junit.xml: one test case per verdict check, for CI systems that read JUnit reports."""

from __future__ import annotations

from xml.etree import ElementTree

from ..analysis import Summary

__all__ = ["render_junit"]


def render_junit(summary: Summary) -> str:
    """Render the checks as a JUnit test suite: fail is a failure, inconclusive and skipped are skipped."""
    checks = summary.checks
    failures = sum(check.status == "fail" for check in checks)
    skipped = sum(check.status in ("inconclusive", "skipped") for check in checks)
    model = summary.capacity["model"]
    suites = ElementTree.Element("testsuites", name="ptu-verify", tests=str(len(checks)), failures=str(failures), skipped=str(skipped))
    suite = ElementTree.SubElement(
        suites, "testsuite", name=f"ptu-verify {model} {summary.capacity['ptu']} PTU", tests=str(len(checks)), failures=str(failures), skipped=str(skipped), errors="0"
    )
    properties = ElementTree.SubElement(suite, "properties")
    ElementTree.SubElement(properties, "property", name="verdict", value=summary.verdict)
    ElementTree.SubElement(properties, "property", name="simulated", value=str(summary.simulated).lower())
    for check in checks:
        case = ElementTree.SubElement(suite, "testcase", classname=f"ptu-verify.{model}", name=check.name)
        if check.status == "fail":
            ElementTree.SubElement(case, "failure", message=check.detail, type="fail").text = check.detail
        elif check.status in ("inconclusive", "skipped"):
            ElementTree.SubElement(case, "skipped", message=f"{check.status}: {check.detail}")
        else:
            ElementTree.SubElement(case, "system-out").text = check.detail
    ElementTree.indent(suites)
    return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
