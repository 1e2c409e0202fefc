"""A local engine that refuses the router's own key (a rotated Secret, a typo in upstreams[].api_key) is a
router fault, not the client's: its 401/403 is never passed on as if the client's key were wrong."""

from __future__ import annotations

import openai
import pytest

from .harness import router_config, run_router

MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("status", [401, 403])
def test_engine_refusing_the_routers_key_is_not_the_clients_401(ups, tmp_path, status):
    ups["a"].control(mode="status", status=status)
    cfg = router_config(
        [{"url": ups["a"].url, "api_key": "${ENGINE_KEY}"}],
        ups["cloud"].url,
        tmp_path / "a.jsonl",
        environ={"ENGINE_KEY": "sk-engine-rotated"},
    )
    with run_router(cfg) as r:
        client = openai.OpenAI(base_url=r.v1, api_key="unused", max_retries=0, timeout=20)
        public = client.chat.completions.with_raw_response.create(
            model="fake-model", messages=MSG, extra_headers={"X-Data-Class": "public"}
        )
        assert public.headers["x-dsdeploy-route"] == "cloud"  # the engine is unusable: like a failed one
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="fake-model", messages=MSG)  # internal: may not leave
        assert info.value.status_code == 503 and "local_key_rejected" in info.value.message
        lines = r.audit_lines(at_least=2)
    failure = f"127.0.0.1:{ups['a'].port}:local_key_rejected"
    assert [(line["fallback_reason"], line["failures"]) for line in lines] == [
        ("local_key_rejected", [failure]),
        (None, [failure]),
    ]
    assert ups["a"].requests()[0]["headers"]["authorization"] == "Bearer sk-engine-rotated"
