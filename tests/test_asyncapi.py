"""The AsyncAPI document of the WebSocket protocol: valid AsyncAPI 3.0, complete, served.

That the server's real frames match it is checked by tests/asyncapi_contract.py (every
real-stack test) and tests/test_asyncapi_live.py (every message type, error code and
close code provoked over a real stack).
"""

import gzip
import json
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from streaming.asyncapi import CLOSE_CODES, ERROR_CODES, build_document
from streaming.protocol import ACTIONS, FIELDS, CloseCode, ErrorCode
from tests.asyncapi_contract import Contract

# The official JSON Schema of AsyncAPI 3.0.0 (the @asyncapi/specs package, 6.11.1,
# schemas/3.0.0-without-$id.json, Apache-2.0), kept here so the test runs offline.
ASYNCAPI_SCHEMA = Path(__file__).with_name("asyncapi-3.0.0-schema.json.gz")

SERVER_TYPES = {
    "tick",
    "ticks",
    "snapshot",
    "reset",
    "subscribed",
    "unsubscribed",
    "subscriptions",
    "pong",
    "authenticated",
    "error",
    "alert",
    "book",
    "book_update",
}


@pytest.fixture(scope="module")
def document():
    return build_document()


@pytest.fixture(scope="module")
def contract(document):
    return Contract(document)


def test_the_document_is_valid_asyncapi_3(document):
    schema = json.loads(gzip.decompress(ASYNCAPI_SCHEMA.read_bytes()))
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in Draft7Validator(schema).iter_errors(document)
    ]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"
    assert document["channels"]["prices"]["address"] == "/ws/prices/"


def test_every_command_and_server_message_is_described(contract):
    assert set(contract.commands) == set(ACTIONS)
    assert set(contract.server) == SERVER_TYPES


def test_command_fields_are_the_parsers(document):
    for action in ACTIONS:
        payload = document["components"]["messages"][f"command.{action}"]["payload"]
        assert set(payload["properties"]) == set(FIELDS[action])
        assert payload["additionalProperties"] is False


def test_alert_directions_are_the_models(document):
    from alerts.models import Direction

    payload = document["components"]["messages"]["server.alert"]["payload"]
    assert payload["properties"]["direction"]["enum"] == [d.value for d in Direction]


def test_every_error_code_and_close_code_is_described(document, contract):
    assert contract.error_codes == {str(c) for c in ErrorCode}
    assert set(ERROR_CODES) == set(ErrorCode)
    described = document["components"]["messages"]["server.error"]["x-error-codes"]
    assert set(described) == {str(c) for c in ErrorCode}
    server_codes = {v for k, v in vars(CloseCode).items() if k.isupper()}
    assert server_codes <= set(CLOSE_CODES)
    assert {1000, 1011, 1012} <= contract.close_codes
    for info in document["channels"]["prices"]["x-close-codes"].values():
        assert info["meaning"] and info["client"]


def test_every_example_matches_its_schema(document, contract):
    for key, message in document["components"]["messages"].items():
        for example in message["examples"]:
            check = contract.check_command if key.startswith("command.") else contract.check_server
            assert check(example["payload"]) == [], key


def test_every_operation_names_messages_of_its_channel(document):
    channel = document["channels"]["prices"]["messages"]
    for name, operation in document["operations"].items():
        refs = [m["$ref"] for m in operation["messages"]]
        refs += [m["$ref"] for m in operation.get("reply", {}).get("messages", [])]
        for ref in refs:
            assert ref.startswith("#/channels/prices/messages/"), name
            assert ref.rsplit("/", 1)[1] in channel, (name, ref)


@pytest.mark.parametrize(
    ("msg", "problem"),
    [
        ({"type": "news", "symbol": "BTC-USD"}, "not in the AsyncAPI document"),
        ({"type": "pong", "id": 1, "ts": 5, "extra": True}, "Additional properties"),
        ({"type": "error", "id": None, "code": "oops", "message": "x"}, "is not one of"),
        (
            {"type": "tick", "symbol": "BTC-USD", "seq": 1, "ts": 1, "price": 1.0, "bid": 1},
            "required property",
        ),
    ],
)
def test_the_contract_refuses_what_the_document_does_not_describe(contract, msg, problem):
    problems = contract.check_server(msg)
    assert problems and problem in problems[0]


def test_the_contract_refuses_unknown_commands_and_close_codes(contract):
    assert contract.check_command({"action": "subscribe", "symbols": ["BTC-USD"], "snapshots": 1})
    assert contract.check_command({"action": "fly"})
    assert contract.check_close(4999)
    assert not contract.check_close(4008)


def test_the_document_is_served_without_auth_and_linked_from_the_api_docs(client, settings):
    settings.WS_REQUIRE_AUTH = True
    response = client.get("/api/asyncapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    served = response.json()
    assert served["asyncapi"] == "3.0.0"
    assert served["servers"]["ticker"]["host"] == "testserver"
    openapi = client.get("/api/openapi.json").json()
    assert "/api/asyncapi.json" in openapi["info"]["description"]
