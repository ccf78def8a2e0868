"""`lifeguard score text` as a policy author runs it: a file of past messages in, decisions out."""
import json
import subprocess
import sys


def test_score_text_gives_one_line_per_message_with_the_policy_action(tmp_path):
    messages = tmp_path / "past.jsonl"
    messages.write_text("\n".join(json.dumps(m) for m in [
        {"id": "a", "text": "gg want to play again?"},
        {"id": "b", "text": "add me on snapchat", "sender_age_band": "adult", "recipient_age_band": "under_13"},
        {"id": "c", "text": "add me on snapchat", "sender_age_band": "adult", "recipient_age_band": "adult"},
        {"id": "d", "text": "i want to kill myself", "sender_age_band": "13_15"},
    ]) + "\n")
    run = subprocess.run([sys.executable, "-m", "tools.cli", "score", "text", str(messages)],
                         capture_output=True, text=True, check=True)
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(r["id"], r["action"]) for r in results] == [("a", "allow"), ("b", "review"), ("c", "allow"),
                                                         ("d", "review")]
    assert all(0 <= p <= 1 for r in results for p in r["scores"].values())
    assert set(results[0]) == {"id", "scores", "link_risk", "action", "reasons"}
    assert any(reason.startswith("rule:off_platform_lure") for reason in results[1]["reasons"])


def test_a_line_holding_a_lone_surrogate_is_scored_like_the_others(tmp_path):
    messages = tmp_path / "past.jsonl"
    messages.write_text('{"id": "odd", "text": "hi \\ud800"}\n{"id": "good", "text": "gg"}\n')
    run = subprocess.run([sys.executable, "-m", "tools.cli", "score", "text", str(messages)],
                         capture_output=True, text=True, check=True)
    results = {r["id"]: r for r in map(json.loads, run.stdout.splitlines())}
    assert "characters that are not text (lone surrogates) replaced for screening" in results["odd"]["reasons"]
    assert results["good"]["action"] == "allow" and results["good"]["reasons"] == []
