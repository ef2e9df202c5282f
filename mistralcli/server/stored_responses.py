"""The Responses API's stored responses over HTTP: GET /v1/responses/{id}, DELETE /v1/responses/{id},
GET .../input_items (paged) and POST .../cancel (a background response's)."""

import asyncio
import time

from mistralcli.server.base import APIError, BaseHandler


class StoredResponseHandler(BaseHandler):
    """GET /v1/responses/{id}, DELETE /v1/responses/{id}, GET .../input_items, POST .../cancel."""

    route = "/v1/responses/{id}"

    def _stored(self, response_id: str):
        store = self.state.responses
        stored = store.get(response_id) if store is not None else None
        if stored is None:
            message = f"no stored response {response_id!r} (unknown, deleted, expired, or made with store false)"
            raise APIError(404, message, param="response_id", code="response_not_found")
        return stored

    def get(self, response_id: str, action: str | None = None):
        stored = self._stored(response_id)
        if action == "input_items":
            self.write_json(_listed(stored.input_items, self))
        elif action is None:
            self.write_json(stored.body)
        else:
            raise APIError(404, f"no route GET {self.request.path}", code="not_found")

    def delete(self, response_id: str, action: str | None = None):
        if action is not None:
            raise APIError(405, f"DELETE {self.request.path} is not a route", code="method_not_allowed")
        self._stored(response_id)
        running = self.state.responses_in_flight.get(response_id)
        if running is not None and running.detached:
            running.cancel()
        self.state.responses.delete(response_id)
        self.write_json({"id": response_id, "object": "response", "deleted": True})

    async def post(self, response_id: str, action: str | None = None):
        if action != "cancel":
            raise APIError(405, f"POST {self.request.path} is not a route", code="method_not_allowed")
        stored = self._stored(response_id)
        running = self.state.responses_in_flight.get(response_id)
        if not stored.body.get("background"):
            raise APIError(
                400, "only a background response can be cancelled", param="response_id", code="invalid_value"
            )
        if running is not None and running.detached:
            running.cancel()
            deadline = time.monotonic() + 10
            while response_id in self.state.responses_in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        self.write_json(self._stored(response_id).body)


def _listed(items: list[dict], handler: BaseHandler) -> dict:
    """A page of input items: ?order=asc|desc (desc by default, as OpenAI's), ?limit (1..100, 20), ?after=ID."""
    order = handler.get_argument("order", "desc")
    if order not in ("asc", "desc"):
        raise APIError(400, f"order: give asc or desc, not {order!r}", param="order")
    limit_text = handler.get_argument("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise APIError(400, f"limit: give a number from 1 to 100, not {limit_text!r}", param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = handler.get_argument("after", None)
    if after is not None:
        ids = [i["id"] for i in ordered]
        if after not in ids:
            raise APIError(400, f"after: no input item {after!r} in this response", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[: int(limit_text)]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > len(page),
    }
