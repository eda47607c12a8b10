"""Fair shares of the in-flight slots (web/fairness.py, web/shedding.py): a flooding client cannot take a victim's."""

from __future__ import annotations

import pytest

from tests.support.helpers import make_radiograph
from web.errors import ApiError
from web.fairness import FairShares, client_address, client_identity, parse_trusted_proxies
from web.shedding import InFlightLimit

FLOOD, VICTIM, THIRD = "key:flood", "key:victim", "key:third"
PNG = make_radiograph()
KEYS = "flood:flood-key-0123456789abcdef,victim:victim-key-0123456789abcdef"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def take(shares: FairShares, client: str, times: int) -> list[str | None]:
    """try_take `times` times; the refusals (None for a slot taken)."""
    return [shares.try_take(client) for _ in range(times)]


def test_a_client_alone_may_use_every_slot_and_no_more() -> None:
    shares = FairShares(4, recent_s=5.0, clock=FakeClock())
    assert take(shares, FLOOD, 4) == [None] * 4
    assert "4 studies are in progress in this worker, its limit" in shares.try_take(FLOOD)
    assert shares.in_flight == 4 and shares.holding == {FLOOD: 4}


def test_a_flood_cannot_take_back_the_slots_it_frees_while_a_victim_is_sending() -> None:
    shares = FairShares(4, recent_s=5.0, clock=FakeClock())
    take(shares, FLOOD, 4)
    assert shares.try_take(VICTIM) is not None  # every slot is held: refused, but now the victim is active
    shares.release(FLOOD)
    refusal = shares.try_take(FLOOD)  # 3 held, its share is 2 of 4 while two clients send
    assert refusal is not None and "already has 3 of the 4" in refusal and "2 clients" in refusal
    assert shares.try_take(VICTIM) is None
    shares.release(FLOOD)
    shares.release(FLOOD)
    assert take(shares, FLOOD, 2)[0] is None and shares.holding[FLOOD] == 2  # back to its share, no further
    assert shares.try_take(VICTIM) is None  # the free slot stayed the victim's
    assert shares.holding == {FLOOD: 2, VICTIM: 2}
    shares.release(FLOOD)
    assert shares.try_take(VICTIM) is not None  # the victim is held to its share too


def test_a_client_quiet_for_longer_than_recent_s_gives_its_share_back() -> None:
    clock = FakeClock()
    shares = FairShares(4, recent_s=5.0, clock=clock)
    assert shares.try_take(VICTIM) is None
    shares.release(VICTIM)
    take(shares, FLOOD, 2)
    assert shares.try_take(FLOOD) is not None  # the victim was seen just now
    clock.now += 5.1
    assert take(shares, FLOOD, 2) == [None, None]  # alone again: every slot
    assert shares.active_clients() == 1


def test_a_client_holding_a_slot_stays_active_however_long_its_study_takes() -> None:
    clock = FakeClock()
    shares = FairShares(4, recent_s=5.0, clock=clock)
    assert shares.try_take(VICTIM) is None
    clock.now += 600
    assert take(shares, FLOOD, 3) == [None, None, "this client already has 2 of the 4 studies this worker runs"
                                                   " at once, its share while 2 clients are sending"]


def test_three_clients_share_the_slots_rounded_up() -> None:
    shares = FairShares(4, recent_s=5.0, clock=FakeClock())
    for client in (FLOOD, VICTIM, THIRD):
        shares.try_take(client)
    assert shares.share() == 2
    assert shares.try_take(FLOOD) is None and shares.try_take(FLOOD) is not None
    assert shares.try_take(VICTIM) is not None  # the limit: 4 in flight


def test_the_in_flight_limit_releases_the_slot_when_the_block_raises() -> None:
    limit = InFlightLimit(2, recent_s=5.0, clock=FakeClock())
    with pytest.raises(ValueError), limit.admit(FLOOD):
        raise ValueError("a failed study")
    assert limit.in_flight == 0 and limit.shares.holding == {}
    with limit.admit(FLOOD):
        with pytest.raises(ApiError) as refused, limit.admit(VICTIM), limit.admit(VICTIM):
            pass
    assert refused.value.status == 503 and refused.value.code == "overloaded" and refused.value.retry_after_s >= 1
    assert limit.in_flight == 0


@pytest.mark.parametrize(("peer", "forwarded_for", "trusted", "expected"), [
    ("10.0.0.5", None, "", "10.0.0.5"),
    ("10.0.0.5", "1.2.3.4", "", "10.0.0.5"),  # no trusted proxy: the header is the client's own words
    ("127.0.0.1", "1.2.3.4", "127.0.0.1", "1.2.3.4"),
    ("127.0.0.1", "6.6.6.6, 1.2.3.4", "127.0.0.1", "1.2.3.4"),  # a client's own X-Forwarded-For is left of its hop
    ("127.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.2", "127.0.0.1 10.0.0.2", "1.2.3.4"),  # two trusted fronts
    ("127.0.0.1", "10.0.0.2", "127.0.0.1,10.0.0.2", "10.0.0.2"),  # only proxies: the farthest one
    ("127.0.0.1", " , ", "127.0.0.1", "127.0.0.1"),
    ("10.0.0.9", "1.2.3.4", "127.0.0.1", "10.0.0.9"),  # a peer that is not a trusted proxy
    (None, None, "", "unknown"),
])
def test_client_address_believes_x_forwarded_for_only_from_trusted_proxies(peer, forwarded_for, trusted,
                                                                            expected) -> None:
    assert client_address(peer, forwarded_for, parse_trusted_proxies(trusted)) == expected


def test_client_identity_is_the_key_when_there_is_one_else_the_address() -> None:
    assert client_identity("radiology", "1.2.3.4") == "key:radiology"
    assert client_identity("-", "1.2.3.4") == client_identity(None, "1.2.3.4") == "address:1.2.3.4"


def _app_with_clock(tiny_repository, clock: FakeClock, **config):
    from app import create_app

    flask_app = create_app({"MODELS_DIR": str(tiny_repository), "WARMUP": False, "AUDIT_LOG": "", **config})
    flask_app.extensions["in_flight"] = InFlightLimit(2, recent_s=5.0, clock=clock)
    return flask_app


def test_the_predict_door_counts_shares_by_api_key(tiny_repository) -> None:
    flask_app = _app_with_clock(tiny_repository, FakeClock(), API_KEYS=KEYS)
    shares = flask_app.extensions["in_flight"].shares
    client = flask_app.test_client()

    def post(key: str) -> int:
        return client.post("/predict", data=PNG, content_type="image/png",
                           headers={"Authorization": f"Bearer {key}-key-0123456789abcdef"}).status_code

    try:
        take(shares, "key:flood", 2)  # two studies of the flooding key in progress
        assert post("victim") == 503  # every slot held; the victim is now active
        shares.release("key:flood")
        assert post("flood") == 503  # the flood holds its share (1 of 2): the free slot is kept
        assert post("victim") == 200
        assert shares.holding == {"key:flood": 1}
    finally:
        flask_app.extensions["pipeline_loader"].close()


def test_without_keys_shares_go_by_address_and_by_x_forwarded_for_behind_a_trusted_proxy(tiny_repository) -> None:
    flask_app = _app_with_clock(tiny_repository, FakeClock(), TRUSTED_PROXIES="127.0.0.1")
    shares = flask_app.extensions["in_flight"].shares
    client = flask_app.test_client()

    def post(forwarded_for: str, peer: str = "127.0.0.1") -> int:
        return client.post("/predict", data=PNG, content_type="image/png", environ_base={"REMOTE_ADDR": peer},
                           headers={"X-Forwarded-For": forwarded_for}).status_code

    try:
        take(shares, "address:1.2.3.4", 2)
        assert post("5.6.7.8") == 503
        shares.release("address:1.2.3.4")
        assert post("9.9.9.9, 1.2.3.4") == 503  # the flood's own hop, whatever it writes before it
        assert post("5.6.7.8") == 200
        shares.release("address:1.2.3.4")
        take(shares, "address:10.0.0.7", 1)  # a client that came directly, at its share (1 of 2, 3 clients)
        assert post("5.6.7.8", peer="10.0.0.7") == 503  # its X-Forwarded-For is not believed: over its share
        assert shares.holding == {"address:10.0.0.7": 1}
    finally:
        flask_app.extensions["pipeline_loader"].close()


def _nice_of(thread_id: int) -> int:
    """A thread's nice value, from /proc (field 19 of its stat line)."""
    stat = open(f"/proc/self/task/{thread_id}/stat").read()
    return int(stat.rsplit(")", 1)[1].split()[16])


def test_models_loaded_in_the_background_run_nicer_than_the_request_threads(tiny_repository) -> None:
    import threading

    from app import create_app

    before = set(threading.enumerate())  # other apps of the session have batchers of their own
    flask_app = create_app({"MODELS_DIR": str(tiny_repository), "WARMUP": False, "LOAD_IN_BACKGROUND": True,
                            "MODEL_NICE": 5})
    try:
        assert flask_app.extensions["pipeline_loader"].loaded.wait(120)
        batchers = [thread for thread in set(threading.enumerate()) - before if thread.name.startswith("batcher-")]
        assert batchers and all(_nice_of(thread.native_id) == _nice_of(threading.get_native_id()) + 5
                                for thread in batchers)
    finally:
        flask_app.extensions["pipeline_loader"].close()
