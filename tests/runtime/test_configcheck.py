"""The runtime validates a component's resolved config against the real signature before
its factory runs (the compiler's check is the first line; this is the second)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import rtcomponents
from oneiric._lifecycle.runtime import Runtime, SwapAborted
from planbuild import component, plan

pytestmark = pytest.mark.anyio

CACHE = "adapter:cache"
MEMORY = "oneiric.adapters.memory:MemoryCache"


def memory_cache(config: dict[str, Any]) -> dict[str, Any]:
    made = component(CACHE, impl=MEMORY)
    made["config"] = config  # without the test stores' "tag"
    return made


async def refusal(*components: dict[str, Any]) -> str:
    runtime = Runtime()
    with pytest.raises(SwapAborted) as refused:
        await runtime.apply(plan(*components))
    assert all(handle.slot is None for handle in runtime.handles.values())
    return str(refused.value)


async def test_a_string_for_a_duration_is_refused_naming_component_key_expected_and_given() -> None:
    message = await refusal(memory_cache({"ttl": "5m"}))
    assert message == (
        'adapter:cache (stacks/test.oneiric:1:1): config "ttl" of '
        "oneiric.adapters.memory:MemoryCache expects timedelta | None, given '5m' (str); "
        "refused before activation"
    )


async def test_an_unknown_key_is_refused() -> None:
    message = await refusal(memory_cache({"max_entrys": 5}))
    assert (
        'config "max_entrys" is not a parameter of oneiric.adapters.memory:MemoryCache' in message
    )
    assert "it takes: max_entries, ttl" in message


async def test_a_missing_required_parameter_is_refused_before_the_factory_runs() -> None:
    store = component("adapter:store")
    store["config"] = {"activate_sleep_ms": 1}  # no "tag", which rtcomponents.Store requires
    before = set(rtcomponents.LIVE)
    message = await refusal(store)
    assert 'rtcomponents:Store requires config "tag" (str), which the plan does not set' in message
    assert before == rtcomponents.LIVE  # the factory never ran


async def test_env_values_are_validated_into_the_kind_the_parameter_asks_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ONEIRIC_TEST_MAX", "7")
    runtime = Runtime()
    await runtime.apply(
        plan(
            memory_cache(
                {
                    "max_entries": {"$env": "ONEIRIC_TEST_MAX", "default": 5},
                    "ttl": {"$duration_ms": 1500},
                }
            )
        )
    )
    with runtime.handle(CACHE).use() as cache:
        assert (cache.max_entries, cache.ttl) == (7, timedelta(milliseconds=1500))
    await runtime.stop()


async def test_an_env_value_that_cannot_fit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEIRIC_TEST_MAX", "many")
    message = await refusal(memory_cache({"max_entries": {"$env": "ONEIRIC_TEST_MAX"}}))
    assert "expects int, given 'many' (str)" in message


async def test_callables_are_checked_on_the_parameters_config_binds() -> None:
    action = component("action:zip", impl="oneiric.actions.compress:compress")
    action["config"] = {"format": "rar"}
    message = await refusal(action)
    assert 'config "format" of oneiric.actions.compress:compress expects' in message
    assert "given 'rar' (str)" in message
