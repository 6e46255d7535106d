"""Durable sending and the receipt loop against the loopback broker, with a real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sdp import devpki
from sdp.client import SdpClient
from sdp.environment import Environment
from sdp.errors import OutcomeUnknownError
from sdp.outbox import Outbox, pull_receipts
from sdp.store import RecipientProtection, SqliteStore, State
from sdp.transport import RetryPolicy
from tests.conftest import MF_ORGNR
from tests.loopback import LoopbackBroker, serve
from tests.test_client import _digital


@pytest.fixture
def setup(tmp_path: Path, broker: devpki.Identity, mailbox: devpki.Identity,
          ca: devpki.Identity, intermediate: devpki.Identity, sender: devpki.Identity
          ) -> Iterator[tuple[LoopbackBroker, SdpClient, SqliteStore]]:
    state = LoopbackBroker(broker=broker, mailbox=mailbox, trust=[ca.certificate],
                           intermediates=[intermediate.certificate], mf_orgnr=MF_ORGNR,
                           receipt_kinds=["levering", "aapning"])
    with serve(state):
        env = Environment.custom(state.url, [ca.certificate, intermediate.certificate])
        store = SqliteStore(tmp_path / "store.sqlite",
                            protection=RecipientProtection.hashed(b"k" * 32))
        with SdpClient(env, sender, retry=RetryPolicy(max_attempts=1)) as client:
            yield state, client, store
        store.close()


def test_send_pull_store_confirm(setup, tmp_path: Path, mailbox: devpki.Identity) -> None:
    state, client, store = setup
    result = Outbox(client, store, tmp_path / "outbox").send(_digital(mailbox))
    assert store.get(result.conversation_id).state is State.SENT  # type: ignore[union-attr]
    assert not any((tmp_path / "outbox").iterdir())  # prepared message removed once acknowledged
    summary = pull_receipts(client, store)
    assert summary.by_kind == {"Leveringskvittering": 1, "Aapningskvittering": 1}
    record = store.get(result.conversation_id)
    assert record is not None and record.state is State.OPENED
    assert len(state.confirmed) == 2 and not store.unconfirmed_receipts()


def test_unknown_outcome_is_resumed_with_the_same_message_id(setup, tmp_path: Path,
                                                             mailbox: devpki.Identity) -> None:
    state, client, store = setup
    state.drop_after_processing = 1
    outbox = Outbox(client, store, tmp_path / "outbox")
    with pytest.raises(OutcomeUnknownError):
        outbox.send(_digital(mailbox))
    (pending,) = store.pending_sends()
    resumed = outbox.resume()
    assert [r.message_id for r in resumed] == [pending.message_id]
    assert state.received_message_ids == [pending.message_id] * 2
    assert len(state.incoming) == 1 and not store.pending_sends()


def test_receipt_stored_but_not_confirmed_is_confirmed_after_restart(
        setup, tmp_path: Path, mailbox: devpki.Identity) -> None:
    state, client, store = setup
    state.receipt_kinds = ["levering"]
    Outbox(client, store, tmp_path / "outbox").send(_digital(mailbox))
    receipt = client.pull()
    assert receipt is not None
    store.store_receipt(receipt)  # ... and the process dies before confirming
    assert len(store.unconfirmed_receipts()) == 1
    summary = pull_receipts(client, store)
    assert summary.reconfirmed == 1 and summary.total == 0
    assert len(state.confirmed) == 1 and not state.inflight


def test_prepared_message_is_removed_once_a_receipt_settles_the_send(
        setup, tmp_path: Path, mailbox: devpki.Identity) -> None:
    state, client, store = setup
    state.drop_after_processing = 1  # the transport receipt never arrives ...
    outbox = Outbox(client, store, tmp_path / "outbox")
    with pytest.raises(OutcomeUnknownError):
        outbox.send(_digital(mailbox))
    assert len(list((tmp_path / "outbox").iterdir())) == 1
    pull_receipts(client, store)  # ... but the mailbox's receipts prove it was sent
    assert not store.pending_sends()
    outbox.resume()
    assert not list((tmp_path / "outbox").iterdir())
    assert len(state.incoming) == 1
