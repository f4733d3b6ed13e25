"""Realistic events captured from the real `sentry-sdk` client.

The SDK is initialised with an in-memory transport, then made to report what applications
report: exceptions raised through a few layers of real code (so the stack traces are real),
log-style messages at several levels (some with parameters, some not in English), chained
exceptions, breadcrumbs, extra data, custom fingerprints, users, releases and distributions,
environments, server names, request data with browser, mobile, bot and library user agents. Each captured envelope's event is kept as the SDK sent it.
Nothing is read from outside the repository.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

RELEASES = [
    "backend@1.4.0",
    "backend@1.4.1",
    "backend@1.5.0-rc.1",
    "web@2024.06.1",
    "web@2024.06.2+build.7",
]
ENVIRONMENTS = ["production", "staging", "development"]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "okhttp/4.12.0",
    "python-requests/2.31.0",
    "curl/8.5.0",
]
PATHS = ["/api/0/orders/", "/checkout", "/api/0/users/me/", "/search?q=shoes", "/cart/items/42"]
LEVELS: list[Any] = ["error", "warning", "info", "fatal"]
SERVER_NAMES = ["web-1", "web-2", "web-3", "worker-a", "worker-b"]
# Messages as applications log them, some with parameters and some not in English.
LOG_MESSAGES: list[tuple[str, Callable[[random.Random], list[str]]]] = [
    ("Payment provider answered slowly (%ss)", lambda rng: [str(rng.randrange(2, 30))]),
    ("Order %s could not be charged: %s", lambda rng: [str(rng.randrange(10**6)), "card_declined"]),
    ("Paiement refusé pour la commande %s", lambda rng: [str(rng.randrange(10**6))]),
    ("支付失败: 订单 %s", lambda rng: [str(rng.randrange(10**6))]),
    ("Cache stampede on key %r", lambda rng: [f"product:{rng.randrange(100)}"]),
]


class _Capture(Transport):
    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type == "event" and item.payload.json is not None:
                self.events.append(item.payload.json)


# A few layers of ordinary application code, so the SDK records real frames.
class InventoryError(Exception):
    pass


def _parse_quantity(raw: str) -> int:
    return int(raw)


def _reserve(stock: dict[str, int], sku: str, quantity: str) -> int:
    available = stock[sku]
    wanted = _parse_quantity(quantity)
    if wanted > available:
        raise InventoryError(f"only {available} of {sku} left, {wanted} wanted")
    return available - wanted


def _average(values: list[int]) -> float:
    return sum(values) / len(values)


class CheckoutError(Exception):
    pass


def _pay(order: dict[str, Any]) -> None:
    try:
        order["card"]["number"]
    except KeyError as error:
        raise CheckoutError(f"order {order['id']} has no payment method") from error


def _checkout(kind: int) -> None:
    stock = {"sku-1": 3, "sku-2": 0}
    if kind == 0:
        _reserve(stock, "sku-9", "1")  # KeyError
    elif kind == 1:
        _reserve(stock, "sku-1", "many")  # ValueError
    elif kind == 2:
        _reserve(stock, "sku-2", "2")  # InventoryError
    elif kind == 3:
        _average([])  # ZeroDivisionError
    else:
        _pay({"id": 7, "card": {}})  # CheckoutError chained from a KeyError


def _one_event(rng: random.Random, index: int) -> None:
    with sentry_sdk.new_scope() as scope:
        user_number = rng.randrange(500)
        choice = rng.random()
        if choice < 0.5:
            scope.set_user(
                {
                    "id": str(user_number),
                    "username": f"user{user_number}",
                    "email": f"user{user_number}@example.com",
                }
            )
        elif choice < 0.7:
            scope.set_user({"email": f"user{user_number}@example.com"})
        elif choice < 0.8:
            scope.set_user(
                {
                    "ip_address": f"10.{user_number % 250}.{rng.randrange(250)}.{rng.randrange(1, 250)}"
                }
            )
        scope.set_tag("shard", str(rng.randrange(4)))
        scope.set_tag("feature", rng.choice(["checkout", "search", "profile"]))
        for step in range(rng.randrange(4)):
            sentry_sdk.add_breadcrumb(
                category="http",
                message=f"GET {rng.choice(PATHS)}",
                level="info",
                data={"step": step},
            )
        release = rng.choice(RELEASES)
        environment = rng.choice(ENVIRONMENTS)
        user_agent = rng.choice(USER_AGENTS)
        path = rng.choice(PATHS)
        transaction = rng.choice([None, f"GET {path.split('?')[0]}", "checkout.views.submit"])

        dist = rng.choice(["1", "2", "3"]) if release.startswith("web@") else None
        server_name = rng.choice(SERVER_NAMES)
        if rng.random() < 0.3:
            scope.set_extra(
                "cart",
                {"items": [{"sku": f"sku-{n}", "qty": n} for n in range(rng.randrange(1, 4))]},
            )
        if rng.random() < 0.1:
            scope.fingerprint = ["{{ default }}", rng.choice(["checkout", "payments"])]

        def decorate(event: Any, _hint: Any) -> Any:
            event["release"] = release
            event["environment"] = environment
            event["server_name"] = server_name
            if dist is not None:
                event["dist"] = dist
            if transaction is not None:
                event["transaction"] = transaction
            if rng.random() < 0.8:
                event["request"] = {
                    "url": f"https://shop.example.com{path}",
                    "method": rng.choice(["GET", "POST"]),
                    "headers": {"User-Agent": user_agent, "Accept": "application/json"},
                }
            return event

        scope.add_event_processor(decorate)
        if index % 6 == 2:
            sentry_sdk.capture_message(
                f"Payment provider answered slowly ({rng.randrange(2, 30)}s)",
                level=rng.choice(LEVELS),
            )
        elif index % 6 == 5:
            template, params = rng.choice(LOG_MESSAGES)
            values = params(rng)
            sentry_sdk.capture_event(
                {
                    "logentry": {
                        "message": template,
                        "params": values,
                        "formatted": template % tuple(values),
                    },
                    "logger": rng.choice(["payments", "orders.tasks", "cache"]),
                    "level": rng.choice(LEVELS),
                }
            )
        else:
            try:
                _checkout(rng.randrange(5))
            except Exception:  # noqa: BLE001 - every exception is what we want the SDK to see
                sentry_sdk.capture_exception()


def capture_events(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Capture `count` events from the real SDK (about a millisecond each)."""
    rng = random.Random(seed)
    client = sentry_sdk.Client(
        dsn="https://public@127.0.0.1/1",
        transport=_Capture,
        default_integrations=False,
        auto_enabling_integrations=False,
        max_breadcrumbs=10,
        server_name="web-1",
        traces_sample_rate=0.0,
        # User data (ip addresses included) and frame variables, as an application that opts
        # in sends them.
        data_collection={"user_info": True, "stack_frame_variables": True},
    )
    with sentry_sdk.isolation_scope() as isolation:
        isolation.set_client(client)
        for index in range(count):
            _one_event(rng, index)
    transport = client.transport
    assert isinstance(transport, _Capture)
    client.close()
    # The SDK always reports an environment ("production" by default); real traffic also has
    # events without one, so drop it from some, as an SDK configured with none would.
    for event in transport.events:
        if rng.random() < 0.2:
            event.pop("environment", None)
    return transport.events


def event_stream(pool_size: int = 400, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Endless events: a pool captured once, then cycled (callers give each a fresh id)."""
    pool = capture_events(pool_size, seed)
    if not pool:
        raise RuntimeError("sentry-sdk captured no events")
    while True:
        yield from pool
