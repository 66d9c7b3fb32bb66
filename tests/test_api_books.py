"""GET /api/symbols/{symbol}/book through Django's full stack, on real Redis (issue 21).

The same endpoint served by a real stack with a real producer: tests/test_api_live.py.
"""

import logging

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group, User
from django.test import AsyncClient

from feeds.books import FeedBooks
from feeds.sources.base import BookDraft, KindLog, Source, SourceContext, SymbolConfig
from markets.book import checksum
from markets.books import BookPublisher
from markets.models import Symbol

pytestmark = pytest.mark.usefixtures("async_symbols", "clean_redis")

BIDS = [(f"{100 - i}.50", f"{i + 1}") for i in range(60)]
ASKS = [(f"{101 + i}.00", f"0.{i + 1:03d}") for i in range(60)]


class HandSource(Source):
    name = "hand"

    def __init__(self, symbol: str, *, has_book: bool) -> None:
        config = SymbolConfig(symbol, "crypto", 0, 0.5, 100.0, source="hand")
        super().__init__(config, SourceContext(None, 1.0, 0))
        self.has_book = has_book

    async def ticks(self):  # pragma: no cover - never run
        return
        yield


async def publish_book(symbol: str, *, has_book: bool = True) -> None:
    books = FeedBooks(BookPublisher.unfenced_for_tests(), log=KindLog(logging.getLogger(), "t"))
    books.start(symbol, HandSource(symbol, has_book=has_book))
    books.apply(BookDraft(symbol, BIDS, ASKS, snapshot=True))
    await books.publish()
    books.apply(BookDraft(symbol, [("100.50", "0")], [("101.00", "9.5")]))
    await books.publish()


async def test_the_book_at_a_depth_has_the_shape_of_the_book_message():
    await publish_book("BTC-USD")
    response = await AsyncClient().get("/api/symbols/BTC-USD/book?depth=3")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["bids"] == [["99.50", "2"], ["98.50", "3"], ["97.50", "4"]]
    assert body["asks"] == [["101.00", "9.5"], ["102.00", "0.002"], ["103.00", "0.003"]]
    assert body["checksum"] == checksum(body["bids"], body["asks"])
    assert {k: body[k] for k in ("type", "symbol", "seq", "depth", "available")} == {
        "type": "book",
        "symbol": "BTC-USD",
        "seq": 2,
        "depth": 3,
        "available": True,
    }
    assert body["epoch"] and body["ts"] > 0 and "reason" not in body

    default = (await AsyncClient().get("/api/symbols/BTC-USD/book")).json()
    assert default["depth"] == 10 and len(default["bids"]) == len(default["asks"]) == 10
    deepest = (await AsyncClient().get("/api/symbols/BTC-USD/book?depth=50")).json()
    assert len(deepest["bids"]) == len(deepest["asks"]) == 50
    assert deepest["checksum"] == default["checksum"]  # the checksum covers 10 levels


@pytest.mark.parametrize("depth", ["0", "51", "-1", "ten", "1.5"])
async def test_a_depth_outside_1_to_50_is_a_bad_request(depth):
    response = await AsyncClient().get(f"/api/symbols/BTC-USD/book?depth={depth}")
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == "bad_request" and "depth" in body["message"]


async def test_unknown_and_inactive_symbols_are_404():
    await sync_to_async(Symbol.objects.filter(ticker="AAPL").update)(active=False)
    for ticker in ("NOPE", "AAPL"):
        response = await AsyncClient().get(f"/api/symbols/{ticker}/book")
        assert response.status_code == 404
        assert response.json()["code"] == "unknown_symbol"


async def test_symbols_without_a_book_say_why():
    never = (await AsyncClient().get("/api/symbols/ETH-USD/book?depth=5")).json()
    assert never == {
        "type": "book",
        "symbol": "ETH-USD",
        "seq": 0,
        "epoch": "",
        "ts": 0,
        "depth": 5,
        "bids": [],
        "asks": [],
        "checksum": 0,
        "available": False,
        "reason": "no_book",
    }
    await publish_book("SOL-USD", has_book=False)
    none = (await AsyncClient().get("/api/symbols/SOL-USD/book")).json()
    assert none["available"] is False and none["bids"] == none["asks"] == []
    assert none["reason"] == "the hand source has no order book"
    assert none["seq"] == 1 and none["epoch"]


@pytest.mark.django_db(transaction=True)
async def test_a_restricted_book_follows_the_entitlement_rule():
    def restrict():
        pro = Group.objects.create(name="pro")
        Symbol.objects.filter(ticker="DOGE-USD").update(required_group=pro)
        outsider = User.objects.create_user("outsider")
        insider = User.objects.create_user("insider")
        insider.groups.add(pro)
        return outsider, insider

    outsider_user, insider_user = await sync_to_async(restrict)()
    await publish_book("DOGE-USD")
    anonymous = await AsyncClient().get("/api/symbols/DOGE-USD/book")
    assert anonymous.status_code == 403 and anonymous.json()["symbols"] == ["DOGE-USD"]
    outsider = AsyncClient()
    await outsider.aforce_login(outsider_user)
    assert (await outsider.get("/api/symbols/DOGE-USD/book")).status_code == 403
    insider = AsyncClient()
    await insider.aforce_login(insider_user)
    allowed = await insider.get("/api/symbols/DOGE-USD/book")
    assert allowed.status_code == 200 and allowed.json()["bids"][0] == ["99.50", "2"]
