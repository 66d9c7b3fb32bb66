"""How a fired alert travels: one channel-layer group per user, one message shape.

The evaluator (a Celery worker) sends each event to its user's group; every web
process's alert relay (streaming.alerts) is a member of the groups of the users it has
open connections for, and writes the message to each of them (docs/protocol.md, "alert").
"""

import json

from .models import AlertEvent

# Event type on the channel layer (streaming.alerts.AlertRelay receives it).
ALERT_EVENT_TYPE = "alert.fired"


def user_group_name(user_id: int) -> str:
    """The channel-layer group of one user's open connections."""
    return f"alerts.user.{int(user_id)}"


def event_ms(event: AlertEvent) -> int:
    return int(event.fired_at.timestamp() * 1000)


def event_fields(event: AlertEvent) -> dict:
    """The fields of an event, as in the REST history and the WebSocket message."""
    return {
        "event_id": event.pk,
        "alert_id": event.alert_id,
        "symbol": event.symbol,
        "direction": event.direction,
        "threshold": float(event.threshold),
        "price": event.price,
        "seq": event.seq,
        "ts": event.tick_ts,
        "fired_at": event_ms(event),
    }


def alert_message(event: AlertEvent) -> dict:
    """The WebSocket message: ``{"type": "alert", ...event fields}``."""
    return {"type": "alert", **event_fields(event)}


def channel_event(event: AlertEvent) -> dict:
    """The channel-layer event for ``event``; the JSON is encoded once, here."""
    return {
        "type": ALERT_EVENT_TYPE,
        "user_id": event.user_id,
        # The relay checks the connection's right to it before writing (streaming.alerts).
        "symbol": event.symbol,
        "text": json.dumps(alert_message(event)),
    }
