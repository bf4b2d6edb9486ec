"""Anthropic stream events and usage that every translating protocol's stream produces alike."""
from __future__ import annotations

from collections.abc import Mapping

from providers.base import Usage
from providers.sse import encode_event



def error_event(error_type: str, message: str) -> bytes:
    return encode_event("error", {"type": "error", "error": {"type": error_type, "message": message}})


def message_start_event(*, message_id: str, model: str, provider: str, usage: Mapping[str, int]) -> bytes:
    """message_start with the router's `model`, the `provider`, and the prompt's usage (no output yet)."""
    return encode_event("message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "provider": provider,
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 0}}})


def usage_to_account(usage: Mapping[str, int], *, output_counted: bool) -> Usage:
    """The usage a stream leaves: as reported, flagged `estimated` when the upstream never counted
    the output (the relay's meter, gateway/stream_meter.py, counts it from the deltas sent)."""
    result = Usage()
    result.update_from(dict(usage))
    if not output_counted:
        result.estimated = True
    return result


def closing_events(*, stop_reason: str, stop_sequence: str | None, usage: Mapping[str, int]) -> list[bytes]:
    """message_delta (why the answer stopped, and its final usage) and message_stop."""
    return [encode_event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                           "usage": dict(usage)}),
            encode_event("message_stop", {"type": "message_stop"})]


class AnswerStream:
    """The bookkeeping every translating stream does alike: which answer it writes, the usage so
    far, how the answer stopped or failed, and the error event for a broken upstream connection.
    A translator sets `_ended` once message_stop or an error event went out (nothing follows), and
    `_usage_seen` once the upstream counted the output."""

    def __init__(self, *, model: str, provider: str, message_id: str, usage: dict[str, int]) -> None:
        self.model = model
        self.provider = provider
        self.message_id = message_id
        self.usage = usage
        self.stop_reason: str | None = None
        self.finished = False  # message_stop emitted
        self.failure: tuple[str, str] | None = None  # (type, message) of the error event emitted
        self._ended = False
        self._usage_seen = False

    def error(self, message: str, error_type: str = "api_error") -> list[bytes]:
        """The error event for a broken upstream connection; nothing else is closed."""
        if self._ended:
            return []
        self._ended = True
        self.failure = (error_type, message)
        return [error_event(error_type, message)]

    def close_usage(self) -> Usage:
        """Usage to account for, flagged `estimated` when the upstream never counted the output (the
        relay's meter, gateway/stream_meter.py, counts it from the deltas sent)."""
        return usage_to_account(self.usage, output_counted=self._usage_seen)

    def _message_start(self) -> bytes:
        return message_start_event(message_id=self.message_id, model=self.model, provider=self.provider,
                                   usage=self.usage)

    def _message_end(self, stop_sequence: str | None = None) -> list[bytes]:
        """message_delta with the `stop_reason` the translator set, and message_stop: the answer is over."""
        self._ended = self.finished = True
        return closing_events(stop_reason=self.stop_reason, stop_sequence=stop_sequence, usage=self.usage)
