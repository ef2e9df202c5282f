"""POST /v1/embeddings (OpenAI's shape): strings or token ids to vectors, as floats or base64 (the openai SDK's
default), shortened to `dimensions` where the model allows it. Requests that arrive together share forwards
(engine.embedder.AsyncEmbedder). Ollama's /api/embed is in ollama.py, over the same embed()."""

import base64
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from mistralcli.engine.embedder import EmbeddingError
from mistralcli.server import protocol
from mistralcli.server.base import APIError, BaseHandler

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class EmbeddingRequest(protocol._Request):
    input: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None
    truncate: bool = False  # an extension: inputs over the model's length are cut (else refused)

    def inputs(self) -> list:
        x = self.input
        if isinstance(x, str):
            return [x]
        if x and isinstance(x[0], int):
            return [list(x)]
        return list(x)


class EmbeddingsMixin:
    """What both protocols' embedding routes do: refuse where the model does not embed, tokenize and check, take
    the tokens from the rate limit, then embed."""

    async def embed(self, inputs: list, truncate: bool, dimensions: int | None) -> tuple[np.ndarray, int]:
        """The inputs' vectors and their token count; APIError (400) for what the embedder refuses."""
        state = self.state
        if state.embedder is None:
            message = "this server does not embed: serve an embedding model, or this one with --pooling mean (or last)"
            raise APIError(400, message, param="model", code="model_not_embedding")
        if state.shutting_down:
            raise APIError(503, "the server is shutting down", "server_error", code="shutting_down")
        embedder = state.embedder.embedder
        try:
            sequences = embedder.tokenize(inputs, truncate)
            embedder.check_dimensions(dimensions)
        except EmbeddingError as exc:
            raise APIError(400, str(exc), param=exc.param, code="invalid_value") from None
        tokens = sum(map(len, sequences))
        self._take_rate_limit(tokens)
        vectors = await state.embedder.embed_ids(sequences, dimensions)
        state.metrics.embedded_inputs.inc(len(sequences))
        state.metrics.embedded_tokens.inc(tokens)
        self.usage = (tokens, 0)
        return vectors, tokens


class EmbeddingsHandler(EmbeddingsMixin, BaseHandler):
    route = "/v1/embeddings"

    async def post(self):
        request = self.parse(EmbeddingRequest)
        await self.use_model(request.model)
        vectors, tokens = await self.embed(request.inputs(), request.truncate, request.dimensions)
        data = []
        for i, vector in enumerate(vectors):
            if request.encoding_format == "base64":
                encoded = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            else:
                encoded = vector.tolist()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        self.write_json(
            {
                "object": "list",
                "data": data,
                "model": self.state.settings.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
