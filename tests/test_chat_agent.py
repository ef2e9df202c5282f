"""`mistral chat --agent` with a scripted model (a scripted server, `--url`) that calls the agent tools: the
calls run here, each shown with a short result, their results go back to the model, the session keeps the
whole exchange; a dangerous call is never run unasked when there is nobody to ask."""

import json

import pytest
from chat_helpers import ScriptedServer, run_chat
from tool_loop_server import call, tool_results

from mistralcli.chat.store import SessionStore

pytestmark = pytest.mark.slow


def read_then_answer(prompt: str) -> str:
    if tool_results(prompt) == 0:
        return "I will read it." + call("cat", path="notes.txt")
    result = prompt.split("<tool_response>")[-1].split("</tool_response>")[0].strip()
    return f"The notes say: {result}"


def write_then_answer(prompt: str) -> str:
    if tool_results(prompt) == 0:
        return "Writing." + call("write_file", path="out.txt", content="written by the model")
    return "Done: " + prompt.split("<tool_response>")[-1].split("</tool_response>")[0].strip()


def always_calling(prompt: str) -> str:
    return "Again." + call("wc", path="notes.txt")


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "notes.txt").write_text("buy milk\n")
    return root


def agent(data_dir, server, root, *args, input: str):
    return run_chat(data_dir, "--url", server.url, "--agent", "--sandbox-root", str(root), *args, input=input)


def test_a_tool_call_runs_and_its_result_reaches_the_model(tmp_path, smollm2, project):
    server = ScriptedServer(smollm2, read_then_answer)
    try:
        result = agent(tmp_path, server, project, "--session", "a", input="What do my notes say?\n/tools\n")
        assert result.returncode == 0, result.stderr
        assert "The notes say: buy milk" in result.stdout
        assert '→ cat(path="notes.txt")' in result.stderr and "← cat: ok: buy milk" in result.stderr
        assert "write_file" in result.stdout and "grep" in result.stdout  # /tools
        prompts = [p for p, _ in server.engine.asked]
        assert len(prompts) == 2 and '"name": "cat"' in prompts[0]  # the tools were offered
        again = agent(tmp_path, server, project, "-c", input="And again?\n")
        assert again.returncode == 0, again.stderr
        assert "<tool_response>\nbuy milk" in server.engine.asked[-1][0]  # -c replays the stored exchange
    finally:
        server.close()
    with SessionStore(tmp_path / "sessions.sqlite3") as store:
        session = store.get("a")
    roles = [m.role for m in session.messages]
    assert roles[:4] == ["user", "assistant", "tool", "assistant"]
    calling, tool = session.messages[1], session.messages[2]
    assert calling.tool_calls[0]["function"]["name"] == "cat"
    assert json.loads(calling.tool_calls[0]["function"]["arguments"]) == {"path": "notes.txt"}
    assert tool.tool_call_id == calling.tool_calls[0]["id"] and tool.content == "buy milk\n"


def test_a_dangerous_call_is_denied_without_a_terminal_and_runs_with_auto(tmp_path, smollm2, project):
    server = ScriptedServer(smollm2, write_then_answer)
    try:
        denied = agent(tmp_path, server, project, "--writable", str(project), input="Write it.\n")
        assert denied.returncode == 0, denied.stderr
        assert "write_file: denied (no terminal to ask" in denied.stderr
        assert not (project / "out.txt").exists()
        assert "Done: write_file: not run: the call was denied" in denied.stdout
        allowed = agent(
            tmp_path, server, project, "--writable", str(project), "--agent-permission", "auto", input="Write it.\n"
        )
        assert allowed.returncode == 0, allowed.stderr
        assert (project / "out.txt").read_text() == "written by the model"
    finally:
        server.close()


def test_the_round_limit_ends_a_model_that_keeps_calling(tmp_path, smollm2, project):
    server = ScriptedServer(smollm2, always_calling)
    try:
        result = agent(tmp_path, server, project, "--max-tool-rounds", "2", input="Count.\n")
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("→ wc(") == 2
    assert len(server.engine.asked) == 3  # two rounds of calls, then one answer without tools
    assert "You may call these tools" in server.engine.asked[1][0]
    assert "You may call these tools" not in server.engine.asked[-1][0]  # the last answer is asked for without
    assert "2 rounds of tool calls (--max-tool-rounds)" in result.stderr


def test_the_model_here_calls_a_tool(tmp_path, qwen_path, project):
    # the in-process engine: Qwen2.5-Coder's template offers the tools, a grammar holds its call to cat's
    # parameters, the parser reads it, and the result goes back in the next prompt
    result = run_chat(
        tmp_path,
        *("-m", str(qwen_path), "-t", "0", "-n", "16", "--max-tool-rounds", "1", "--session", "q"),
        *("--agent", "--sandbox-root", str(project)),
        input="Use the cat tool to read notes.txt, then tell me what it says.\n",
    )
    assert result.returncode == 0, result.stderr
    assert '→ cat(path="notes.txt")' in result.stderr and "← cat: ok: buy milk" in result.stderr
    with SessionStore(tmp_path / "sessions.sqlite3") as store:
        messages = store.get("q").messages
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
    (called,) = messages[1].tool_calls
    assert called["function"]["name"] == "cat" and json.loads(called["function"]["arguments"]) == {"path": "notes.txt"}
    assert "<tool_call>" not in messages[1].content  # the call's text is not shown as the answer
    assert messages[2].content == "buy milk\n" and messages[3].prompt_tokens > 0


def test_a_thinking_models_thought_is_kept_apart(tmp_path, smollm2):
    from tiny_models import QWEN3_CHAT_TEMPLATE

    server = ScriptedServer(
        smollm2, lambda prompt: "<think>\nTwo and two.\n</think>\n\nIt is 4.", template=QWEN3_CHAT_TEMPLATE
    )
    try:
        result = run_chat(tmp_path, "--url", server.url, "--session", "t", input="What is 2+2?\nAnd 3+3?\n")
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("It is 4.") == 2 and "Two and two." not in result.stdout  # the thought: stderr
    assert "Two and two." in result.stderr
    with SessionStore(tmp_path / "sessions.sqlite3") as store:
        answer = store.get("t").messages[1]
    assert answer.content.strip() == "It is 4." and answer.reasoning.strip() == "Two and two."
    assert "Two and two." not in server.engine.asked[1][0]  # the thought is not sent back
