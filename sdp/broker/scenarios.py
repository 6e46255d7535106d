"""What the simulated mailbox and print providers do with a consignment, and what goes wrong.

A scenario file (TOML or JSON) holds `rule`s, matched against each accepted consignment
(first match wins), and `fault`s, applied to HTTP requests as they arrive. Without a file,
or when no rule matches, the happy path of DIGEST 1.3-1.5 applies: digital post gets a
Leveringskvittering (and an Aapningskvittering when one was asked for); physical post gets
a Mottakskvittering, then a Leveringskvittering.

    [[rule]]
    personidentifikator = "01043100358"      # or postkasseadresse / conversation_id
    outcome = "notice-failed"                 # see OUTCOMES
    varslingskanal = "SMS"
    beskrivelse = "Ugyldig mobilnummer"
    delay = 5                                 # seconds before the first receipt is visible

    [[fault]]
    type = "http-500"                         # see FAULT_TYPES
    on = "send"                               # send | signal | any
    times = 2                                 # 0 = every request
    rate = 0.05                               # optional: each request hit with this chance
    seed = 1                                  # optional: repeatable `rate` draws
"""

from __future__ import annotations

import json
import random
import threading
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sdp.errors import ConfigurationError
from sdp.message import RECEIPT_KINDS

__all__ = [
    "FAULT_TYPES",
    "OUTCOMES",
    "Consignment",
    "Fault",
    "FaultInjector",
    "ReceiptStep",
    "Rule",
    "Scenarios",
    "load_scenarios",
    "parse_scenarios",
]

#: What a rule can make of a consignment (DIGEST 1.3-1.5, 3.8, 3.9, 14 item 7).
OUTCOMES = (
    "delivered",      # digital: levering (+ aapning if asked for); physical: mottak, levering
    "opened",         # the same, with the aapning `opened_after` seconds later
    "notice-failed",  # levering + varslingfeilet (varslingskanal, beskrivelse)
    "rejected",       # feil (feiltype KLIENT/SERVER, detaljer)
    "printed",        # mottak, then levering `posted_after` seconds later
    "returned",       # printed, then returpost `returned_after` s later (DIGEST 11.9)
    "silent",         # accepted, but no receipt ever comes (an overdue Leveringskvittering)
)

#: Request-level faults for reliability testing (DIGEST 9.5).
FAULT_TYPES = (
    "drop-before-read",       # close the connection without reading the request
    "drop-after-processing",  # process and commit, then close: the outcome is unknown
    "http-500",               # answer 500 (not a SOAP fault) without processing
    "slow",                   # process, then wait `seconds` before answering
    "truncate",               # process, then send half the answer under its full length
)
_FAULT_ON = ("send", "signal", "any")
#: How the transport receipt of a matching consignment is signed (client-side trust tests).
TRANSPORT_SIGNERS = ("broker", "wrong-orgnr", "expired", "untrusted")
_CHANNELS = ("EPOST", "SMS")
_FEILTYPER = ("KLIENT", "SERVER")


def _one_of(value: object, allowed: Sequence[str], name: str) -> None:
    if value not in allowed:
        raise ConfigurationError(f"{value!r} is not one of {', '.join(allowed)}", subject=name)


def _non_negative(value: object, name: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ConfigurationError("must be a number of seconds >= 0", subject=name)


@dataclass(frozen=True)
class ReceiptStep:
    """One business receipt to queue, `after` seconds after the consignment was accepted."""

    kind: str
    after: float = 0.0
    varslingskanal: str = "EPOST"
    beskrivelse: str | None = None
    feiltype: str = "KLIENT"
    detaljer: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in RECEIPT_KINDS:
            raise ConfigurationError(f"kind must be one of {', '.join(RECEIPT_KINDS)}",
                                     subject=f"receipt {self.kind!r}")
        _non_negative(self.after, "after")
        _one_of(self.varslingskanal, _CHANNELS, "varslingskanal")
        _one_of(self.feiltype, _FEILTYPER, "feiltype")


@dataclass(frozen=True)
class Consignment:
    """The facts about an accepted consignment that rules match on and outcomes depend on."""

    conversation_id: str
    digital: bool
    personidentifikator: str | None = None
    postkasseadresse: str | None = None
    aapningskvittering: bool = False
    #: Physical post ordered MAKULERING_MED_MELDING, the only case with a returpost.
    makulering_med_melding: bool = False


@dataclass(frozen=True)
class Rule:
    """Match fields (all given must agree; none = every consignment) and an outcome."""

    personidentifikator: str | None = None
    postkasseadresse: str | None = None
    conversation_id: str | None = None
    outcome: str = "delivered"
    delay: float = 0.0
    opened_after: float = 0.0
    posted_after: float = 0.0
    returned_after: float = 0.0
    varslingskanal: str = "EPOST"
    beskrivelse: str | None = None
    feiltype: str = "KLIENT"
    detaljer: str | None = None
    #: Explicit receipts; replaces what `outcome` would queue.
    receipts: tuple[ReceiptStep, ...] | None = None
    #: Queue every receipt twice (the sender must de-duplicate, DIGEST 8.2).
    duplicate: bool = False
    transport_receipt: str = "broker"

    def __post_init__(self) -> None:
        _one_of(self.outcome, OUTCOMES, "outcome")
        _one_of(self.varslingskanal, _CHANNELS, "varslingskanal")
        _one_of(self.feiltype, _FEILTYPER, "feiltype")
        _one_of(self.transport_receipt, TRANSPORT_SIGNERS, "transport_receipt")
        for name in ("delay", "opened_after", "posted_after", "returned_after"):
            _non_negative(getattr(self, name), name)

    def matches(self, c: Consignment) -> bool:
        return all(want is None or want == have for want, have in (
            (self.personidentifikator, c.personidentifikator),
            (self.postkasseadresse, c.postkasseadresse),
            (self.conversation_id, c.conversation_id)))

    def plan(self, c: Consignment) -> list[ReceiptStep]:
        """The receipts this rule queues for `c`, in order."""
        if self.receipts is not None:
            return [ReceiptStep(**{**_as_dict(r), "after": r.after + self.delay})
                    for r in self.receipts]
        d = self.delay
        outcome = self.outcome
        if outcome == "silent":
            return []
        if outcome == "rejected":
            return [ReceiptStep("feil", d, feiltype=self.feiltype,
                                detaljer=self.detaljer or "Avvist av simulatoren")]
        if not c.digital or outcome in ("printed", "returned"):
            # The print provider's sequence (DIGEST 1.4): received, posted, maybe returned.
            steps = [ReceiptStep("mottak", d), ReceiptStep("levering", d + self.posted_after)]
            if outcome == "returned" and c.makulering_med_melding:
                steps.append(ReceiptStep("returpost", d + self.posted_after
                                         + self.returned_after))
            return steps
        steps = [ReceiptStep("levering", d)]
        if outcome == "notice-failed":
            steps.append(ReceiptStep("varslingfeilet", d, varslingskanal=self.varslingskanal,
                                     beskrivelse=self.beskrivelse or "Varsling feilet"))
        elif c.aapningskvittering:  # only when the sender asked for it (DIGEST 11.4)
            steps.append(ReceiptStep("aapning", d + self.opened_after))
        return steps


@dataclass(frozen=True)
class Fault:
    """A request-level fault, applied to the next `times` matching requests (0 = all).

    With `rate` below 1 each matching request is hit only with that probability (a soak
    test's steady fault rate); a miss uses none of `times`. `seed` makes the draws repeatable.
    """

    type: str
    on: str = "send"
    times: int = 1
    seconds: float = 0.0
    rate: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        _one_of(self.type, FAULT_TYPES, "fault type")
        _one_of(self.on, _FAULT_ON, "on")
        if not isinstance(self.times, int) or self.times < 0:
            raise ConfigurationError("must be a whole number >= 0", subject="times")
        _non_negative(self.seconds, "seconds")
        if (not isinstance(self.rate, int | float) or isinstance(self.rate, bool)
                or not 0 <= self.rate <= 1):
            raise ConfigurationError("must be a number from 0 to 1", subject="rate")


@dataclass(frozen=True)
class Scenarios:
    """Rules for outcomes and faults for requests; the default is the happy path."""

    rules: tuple[Rule, ...] = ()
    faults: tuple[Fault, ...] = ()

    def rule_for(self, c: Consignment) -> Rule:
        return next((r for r in self.rules if r.matches(c)), _DEFAULT_RULE)


_DEFAULT_RULE = Rule()


class FaultInjector:
    """Counts down each configured fault as requests use it; thread-safe, in memory only
    (a restarted simulator starts its faults afresh)."""

    def __init__(self, faults: Sequence[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._left: list[tuple[Fault, int | None]] = [
            (f, None if f.times == 0 else f.times) for f in faults]
        # One generator per fault, so each fault's draws depend only on its own seed.
        self._rng = [random.Random(f.seed) for f in faults]  # noqa: S311 - not crypto

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._left.append((fault, None if fault.times == 0 else fault.times))
            self._rng.append(random.Random(fault.seed))  # noqa: S311 - not crypto

    def take(self, fault_type: str, request_kind: str) -> Fault | None:
        """The first armed fault of this type for a `send` or `signal` request, used once."""
        with self._lock:
            for i, (fault, left) in enumerate(self._left):
                if fault.type != fault_type or fault.on not in ("any", request_kind):
                    continue
                if left == 0 or (fault.rate < 1 and self._rng[i].random() >= fault.rate):
                    continue
                if left is None:
                    return fault
                if left > 0:
                    self._left[i] = (fault, left - 1)
                    return fault
            return None


# --- loading ----------------------------------------------------------------------------


def load_scenarios(path: str | Path) -> Scenarios:
    """Read a `.toml` or `.json` scenario file (by its suffix; TOML otherwise)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read: {exc}", subject=str(p)) from exc
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(
            text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"not valid {p.suffix or 'TOML'}: {exc}",
                                 subject=str(p)) from exc
    if not isinstance(data, dict):
        raise ConfigurationError("expected a table/object at the top", subject=str(p))
    return parse_scenarios(data, source=str(p))


def parse_scenarios(data: Mapping[str, Any], *, source: str = "scenarios") -> Scenarios:
    """Build Scenarios from parsed TOML/JSON; unknown keys are errors, not silently ignored."""
    unknown = set(data) - {"rule", "fault"}
    if unknown:
        raise ConfigurationError(f"unknown keys {sorted(unknown)}; expected rule, fault",
                                 subject=source)
    rules = tuple(_rule(r, f"{source}: rule {i + 1}")
                  for i, r in enumerate(_tables(data.get("rule", []), source, "rule")))
    faults = tuple(_build(Fault, f, f"{source}: fault {i + 1}")
                   for i, f in enumerate(_tables(data.get("fault", []), source, "fault")))
    return Scenarios(rules, faults)


def _tables(value: object, source: str, key: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigurationError(f"{key} must be a list of tables ([[{key}]])", subject=source)
    return value


def _rule(raw: dict[str, Any], where: str) -> Rule:
    raw = dict(raw)
    receipts = raw.pop("receipts", None)
    steps: tuple[ReceiptStep, ...] | None = None
    if receipts is not None:
        steps = tuple(_build(ReceiptStep, r, f"{where}: receipt {i + 1}")
                      for i, r in enumerate(_tables(receipts, where, "receipts")))
    rule = _build(Rule, raw, where)
    return Rule(**{**_as_dict(rule), "receipts": steps})


def _build(cls: type[Any], raw: dict[str, Any], where: str) -> Any:
    names = {f.name for f in fields(cls)} - {"receipts"}
    unknown = set(raw) - names
    if unknown:
        raise ConfigurationError(f"unknown keys {sorted(unknown)}; allowed: {sorted(names)}",
                                 subject=where)
    try:
        return cls(**raw)
    except ConfigurationError as exc:
        raise ConfigurationError(str(exc), subject=where) from exc
    except TypeError as exc:
        raise ConfigurationError(str(exc), subject=where) from exc


def _as_dict(obj: object) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}  # type: ignore[arg-type]


