"""The validated-token cache: bounded in size and age, and never an excuse to accept
a token that has been revoked."""

from __future__ import annotations

from .client import client_for

CACHE_SIZE = 3


async def _rescoped(api, unscoped: str) -> str:
    body = {"auth": {"identity": {"methods": ["token"], "token": {"id": unscoped}},
                     "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}}
    r = await api.post("/v3/auth/tokens", json=body)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


async def test_the_cache_never_holds_more_than_its_size(make_cloud):
    cloud = await make_cloud(cache_size=CACHE_SIZE)
    async with client_for(cloud) as api:
        auth = api.component.auth
        admin = await api.admin()
        unscoped = await api.token("demo", unscoped=True)
        tokens = []
        for _ in range(4 * CACHE_SIZE):
            token = await _rescoped(api, unscoped)
            tokens.append(token)
            assert (await api.validate(token, admin)).status_code == 200
            assert len(auth._cache) <= CACHE_SIZE
        # Every token still validates, cached or not.
        for token in tokens:
            assert (await api.validate(token, admin)).status_code == 200
            assert len(auth._cache) <= CACHE_SIZE


async def test_a_revoked_token_is_refused_whether_cached_or_evicted(make_cloud):
    cloud = await make_cloud(cache_size=CACHE_SIZE)
    async with client_for(cloud) as api:
        auth = api.component.auth
        admin = await api.admin()
        unscoped = await api.token("demo", unscoped=True)
        evicted = await _rescoped(api, unscoped)
        assert (await api.validate(evicted, admin)).status_code == 200
        for _ in range(2 * CACHE_SIZE):  # push it out of the cache
            assert (await api.validate(await _rescoped(api, unscoped), admin)).status_code == 200
        assert auth.cached(evicted) is None
        cached = await _rescoped(api, unscoped)
        assert (await api.validate(cached, admin)).status_code == 200
        assert auth.cached(cached) is not None

        for token in (evicted, cached):
            r = await api.delete("/v3/auth/tokens", admin, headers={"X-Subject-Token": token})
            assert r.status_code == 204
            assert (await api.validate(token, admin)).status_code == 404
            assert (await api.get("/v3/auth/projects", token)).status_code == 401
            assert auth.cached(token) is None
        assert len(auth._cache) <= CACHE_SIZE


async def test_a_cached_answer_expires_after_cache_ttl(make_cloud):
    cloud = await make_cloud(cache_ttl=30.0)
    async with client_for(cloud) as api:
        auth = api.component.auth
        now = [1000.0]
        auth._cache._clock = lambda: now[0]
        token = await api.token("demo", project="demo")
        assert (await api.validate(token)).status_code == 200
        assert auth.cached(token) is not None
        now[0] += 31.0
        assert auth.cached(token) is None  # too old: the next use validates afresh
        assert (await api.validate(token)).status_code == 200
        assert auth.cached(token) is not None
