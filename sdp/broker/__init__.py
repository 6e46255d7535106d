"""A local meldingsformidler (message broker) simulator for development and tests.

    broker = Broker(identity=mf, mailbox=pk, print_provider=utskrift, trust=[ca],
                    intermediates=[issuing_ca], data_dir="broker-data")
    running = serve(broker)                 # http://127.0.0.1:<port>/api/ebms
    ...                                     # point SdpClient at running.url
    running.stop()

It verifies consignments with the client's own verification code, answers with signed
transport receipts or ebMS errors, opens the document packages as the mailbox or print
provider would, and queues signed business receipts per sender and MPC in SQLite, so a
restart loses nothing (DIGEST 8, 9, 14). Scenarios choose outcomes and inject faults.
"""

from sdp.broker.certs import DevCerts, load_dev_certs
from sdp.broker.core import Broker, Reply, error_code_for
from sdp.broker.httpserver import DEFAULT_PATH, RunningBroker, serve
from sdp.broker.scenarios import (
    FAULT_TYPES,
    OUTCOMES,
    Consignment,
    Fault,
    ReceiptStep,
    Rule,
    Scenarios,
    load_scenarios,
    parse_scenarios,
)
from sdp.broker.state import BrokerState, QueuedReceipt

__all__ = [
    "DEFAULT_PATH",
    "FAULT_TYPES",
    "OUTCOMES",
    "Broker",
    "BrokerState",
    "Consignment",
    "DevCerts",
    "Fault",
    "QueuedReceipt",
    "ReceiptStep",
    "Reply",
    "Rule",
    "RunningBroker",
    "Scenarios",
    "error_code_for",
    "load_dev_certs",
    "load_scenarios",
    "parse_scenarios",
    "serve",
]
