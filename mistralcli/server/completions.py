"""POST /v1/completions: text prompts (or token ids) continued, echoed when asked, over the common loop of
generate.py."""

from mistralcli.engine.engine import RequestError, RequestOutput
from mistralcli.prompt import encode_prompt
from mistralcli.server import protocol
from mistralcli.server.base import APIError, ServerState
from mistralcli.server.generate import _Choice, _GenerateHandler


class CompletionsHandler(_GenerateHandler):
    route = "/v1/completions"
    id_prefix = "cmpl-"
    prompt_param = "prompt"
    response_object = "text_completion"
    chunk_object = "text_completion"

    def initialize(self, state: ServerState):
        super().initialize(state)
        self.echo = False  # the prompt before each choice's text
        self.n = 1  # choices per prompt
        self.prompt_texts: list[str] = []

    async def post(self):
        request = self.parse(protocol.CompletionRequest)
        await self.use_model(request.model)
        self.require_engine()
        self.echo, self.n = request.echo, request.n
        tokenizer = self.state.tokenizer
        prompts = []
        for prompt in request.prompts():
            if isinstance(prompt, str):
                if not prompt:
                    raise APIError(400, "prompt: the prompt is empty", param="prompt", code="invalid_value")
                prompts.append(encode_prompt(tokenizer, prompt))
                self.prompt_texts.append(prompt)
            else:
                try:
                    self.state.engine.validate(list(prompt))
                except RequestError as exc:
                    raise self._refused(exc, request) from None
                prompts.append(list(prompt))
                self.prompt_texts.append(tokenizer.decode(prompt))
        await self.generate(request, prompts, request.logprobs)

    def _echoed(self, choice: _Choice) -> str:
        """What comes before the choice's text: its prompt when echoing."""
        return self.prompt_texts[choice.index // self.n] if self.echo else ""

    def _chunk_choice(self, choice: _Choice, out: RequestOutput, text: str) -> dict | None:
        if not choice.started:
            choice.started = True
            text = self._echoed(choice) + text
        if not (text or out.finished):
            return None
        return {
            "index": choice.index,
            "text": text,
            "logprobs": self._logprobs(out.logprobs or [], 0) if self.logprobs is not None else None,
            "finish_reason": choice.finish_reason if out.finished else None,
        }

    def _response_choice(self, choice: _Choice) -> dict:
        prefix = self._echoed(choice)
        return {
            "index": choice.index,
            "text": prefix + choice.text,
            "logprobs": self._logprobs(choice.logprobs, len(prefix)) if self.logprobs is not None else None,
            "finish_reason": choice.finish_reason,
        }

    def _logprobs(self, entries, offset: int) -> dict:
        tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
        for e in entries:
            text, _ = self._token(e.token_id)
            tokens.append(text)
            token_logprobs.append(e.logprob)
            top_logprobs.append({self._token(t)[0]: lp for t, lp in e.top})
            offsets.append(offset)
            offset += len(text)
        return {
            "tokens": tokens,
            "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs,
            "text_offset": offsets,
        }
