"""Pre-migration validation findings, parsed from the API-M migration client's console.

The patterns are the client's own messages (validator/validators/APIValidator.java,
see shared/wso2/console-reference.md §4.3), as printed at ERROR/WARN level.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from apim_upgrade.runtime.atomic import write_atomically

_API = r"\{name: (?P<name>[^,]*), version: (?P<version>[^,]*), provider: (?P<provider>[^}]*)\}"
_API_TYPE = r"(?P<name>\S+) version: (?P<version>\S+) type: (?P<type>[^.\s]+)"
PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "OpenAPI definition",
        re.compile(rf"OpenAPI Definition for API {_API} is invalid\. ErrorMessage: (?P<message>.*)$"),
    ),
    (
        "OpenAPI definition",
        re.compile(rf"Error while validating open API definition for {_API_TYPE}\.? ?(?P<message>.*)$"),
    ),
    (
        "OpenAPI definition",
        re.compile(
            r"An unhandled exception has occurred while validating open API definition for "
            rf"{_API_TYPE}(?P<message>.*)$"
        ),
    ),
    ("API availability in DB", re.compile(rf"(?P<message>Unable to find the API) {_API} in the database")),
    ("GraphQL schema", re.compile(r"(?P<message>Invalid GraphQL definition found\..*)$")),
    ("WSDL", re.compile(r"(?P<message>Invalid WSDL definition found\..*)$")),
    ("AsyncAPI definition", re.compile(r"(?P<message>Invalid AsyncAPI definition found\..*)$")),
]
_LEVEL = re.compile(r"^\[[0-9: ,-]+\]\s+(ERROR|WARN)\s+-\s+(?P<cls>\S+)\s+(?P<rest>.*)$")


@dataclass(frozen=True)
class Finding:
    name: str
    version: str
    provider: str
    validator: str
    message: str

    @property
    def api_key(self) -> str:
        return f"{self.name}:{self.version}:{self.provider}"


def parse_line(line: str) -> Finding | None:
    level = _LEVEL.match(line)
    if level is None:
        return None
    text = level.group("rest")
    for validator, pattern in PATTERNS:
        m = pattern.search(text)
        if m:
            groups = m.groupdict()
            return Finding(
                name=(groups.get("name") or "").strip(),
                version=(groups.get("version") or "").strip(),
                provider=(groups.get("provider") or "").strip(),
                validator=validator,
                message=(groups.get("message") or "").strip(),
            )
    return None


class FindingCollector:
    """Line sink that keeps every finding (one per API and message; bounded by the API count)."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self._seen: set[Finding] = set()

    def __call__(self, line: str) -> None:
        finding = parse_line(line)
        if finding is not None and finding not in self._seen:
            self._seen.add(finding)
            self.findings.append(finding)


def write_csv(findings: list[Finding], path: Path) -> Path:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=["name", "version", "provider", "validator", "message"])
    writer.writeheader()
    for f in findings:
        writer.writerow(asdict(f))
    return write_atomically(path, text.getvalue())
