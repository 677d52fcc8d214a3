"""Chat rendering against transformers' apply_chat_template, with Jinja templates written here.

QWEN25_TEMPLATE follows Qwen2.5's chat template minus its tools schema and default system prompt;
LLAMA3_TEMPLATE follows Llama 3.1's minus the date system prompt and tool_calls, with tool results as
the `ipython` role, content as is (3.1's template JSON-quotes string tool content; not reproduced).
Both wrap the assistant content and end token in {% generation %} so transformers computes the
assistant mask too. Tokenizers are trained here (byte-level BPE layouts and SentencePiece).
"""
from __future__ import annotations

import dataclasses
import random

import pytest
from transformers import LlamaTokenizer, PreTrainedTokenizerFast

from vagent_jax.chat_template import render_chat, render_turn_suffix, stop_token_ids
from vagent_jax.tokenizer import load_tokenizer
from vagent_jax.tokenizer_train import BYTE_BPE_LAYOUTS, train_byte_bpe, train_sentencepiece

QWEN25_TEMPLATE = """{%- for message in messages %}
{%- if message.role == "tool" %}
{%- if loop.first or messages[loop.index0 - 1].role != "tool" %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != "tool" %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- elif message.role == "assistant" %}
{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message.content + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}
{%- else %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""

LLAMA3_TEMPLATE = """{{- bos_token }}
{%- for message in messages %}
{%- if message.role == "tool" %}
{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' + message.content + '<|eot_id|>' }}
{%- elif message.role == "assistant" %}
{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- generation %}{{- message.content | trim + '<|eot_id|>' }}{% endgeneration %}
{%- else %}
{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"""

JINJA = {"chatml": QWEN25_TEMPLATE, "llama3": LLAMA3_TEMPLATE}
END = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}
PIECES = ("What is 2+2?", "The answer is 4.", "Let me compute", "def f(x):\n    return x * 2", "日本語", "café",
          "😀", "3.14159", "x = [1, 2, 3]", "\tindented", "a  b   c", "It's", "Привет", "", "  ", "\n")


def make_content(rng: random.Random, assistant: bool) -> str:
    """Random message text; an assistant text may hold a tool call, and its leading whitespace (if any)
    holds no newline."""
    text = "".join(rng.choice(PIECES) + rng.choice(("", " ", "\n", "\n\n")) for _ in range(rng.randint(0, 6)))
    if assistant and rng.random() < 0.4:
        text += '<tool_call>\n{"name": "calc", "arguments": {"expr": "%d*%d"}}\n</tool_call>' % (
            rng.randint(0, 99), rng.randint(0, 99))
    if rng.random() < 0.3:
        text = rng.choice((" ", "  ", "\t")) + text
    if rng.random() < 0.3:
        text += rng.choice((" ", "\n", "\n\n"))
    if assistant and "\n" in text[:len(text) - len(text.lstrip())]:
        text = text.lstrip()  # see the documented exception below
    return text


def make_conversation(rng: random.Random) -> list[dict[str, str]]:
    msgs = []
    if rng.random() < 0.6:
        msgs.append({"role": "system", "content": make_content(rng, False)})
    msgs.append({"role": "user", "content": make_content(rng, False)})
    for _ in range(rng.randint(0, 3)):
        msgs.append({"role": "assistant", "content": make_content(rng, True)})
        for _ in range(rng.randint(1, 2)):
            msgs.append({"role": rng.choice(("tool", "tool", "user")), "content": make_content(rng, False)})
    if rng.random() < 0.7:
        msgs.append({"role": "assistant", "content": make_content(rng, True)})
    return msgs


@pytest.fixture(scope="module")
def conversations() -> list[list[dict[str, str]]]:
    rng = random.Random(0)
    return [make_conversation(rng) for _ in range(60)]


@pytest.fixture(scope="module")
def tok_dirs(tmp_path_factory) -> dict[str, object]:
    rng = random.Random(1)
    corpus = [m["content"] for _ in range(400) for m in make_conversation(rng)]
    dirs = {}
    for layout in BYTE_BPE_LAYOUTS:
        dirs[layout] = tmp_path_factory.mktemp(layout)
        train_byte_bpe(corpus, dirs[layout], vocab_size=600, layout=layout)
    dirs["sp"] = tmp_path_factory.mktemp("sp")
    train_sentencepiece(corpus, dirs["sp"], vocab_size=600)
    return dirs


def reference(kind: str, path, template: str):
    """A transformers tokenizer over the same files, carrying the Jinja template."""
    kwargs = {"chat_template": JINJA[template], "bos_token": "<|begin_of_text|>"}
    if kind == "sp":
        return LlamaTokenizer.from_pretrained(str(path), add_prefix_space=False, legacy=False, **kwargs)
    return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), **kwargs)


@pytest.mark.parametrize("kind", ["qwen2", "llama3", "sp"])
@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_render_matches_apply_chat_template(template, kind, tok_dirs, conversations):
    tok = load_tokenizer(tok_dirs[kind])
    ref = reference(kind, tok_dirs[kind], template)
    for conv in conversations:
        for gen in (False, True):
            ids, mask = render_chat(conv, tok, template, add_generation_prompt=gen)
            out = ref.apply_chat_template(conv, tokenize=True, add_generation_prompt=gen, return_dict=True,
                                          return_assistant_tokens_mask=True)
            assert ids == list(out["input_ids"]), conv
            assert mask == list(out["assistant_masks"]), conv


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_mask_holds_exactly_assistant_content_and_end_token(template, tok_dirs, conversations):
    tok = load_tokenizer(tok_dirs["qwen2"])
    for conv in conversations:
        ids, mask = render_chat(conv, tok, template, add_generation_prompt=False)
        assert len(ids) == len(mask) and set(mask) <= {0, 1}
        generated = tok.decode([i for i, m in zip(ids, mask) if m])
        contents = [m["content"] if template == "chatml" else m["content"].strip()
                    for m in conv if m["role"] == "assistant"]
        assert generated == "".join(c + END[template] for c in contents)


@pytest.mark.parametrize("kind", ["qwen2", "llama3", "sp"])
@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_prompt_generated_and_suffixes_concatenate_to_render(template, kind, tok_dirs, conversations):
    """What the decode engine holds (prompt + generated + observation suffixes) equals render_chat."""
    tok = load_tokenizer(tok_dirs[kind])
    for conv in conversations:
        first = next(i for i, m in enumerate(conv) if m["role"] == "assistant") if any(
            m["role"] == "assistant" for m in conv) else len(conv)
        held, _ = render_chat(conv[:first], tok, template, add_generation_prompt=True)
        k = first
        while k < len(conv):
            content = conv[k]["content"] if template == "chatml" else conv[k]["content"].strip()
            held += tok.encode(content + END[template])  # the policy's tokens, ending with its stop token
            assert held[-1] in stop_token_ids(template, tok)
            k += 1
            j = k
            while j < len(conv) and conv[j]["role"] != "assistant":
                j += 1
            if j == k:
                break
            held += render_turn_suffix(template, conv[k:j], tok)
            expected, mask = render_chat(conv[:j], tok, template, add_generation_prompt=True)
            assert held == expected
            assert mask[-len(render_turn_suffix(template, conv[k:j], tok)):] == [0] * len(
                render_turn_suffix(template, conv[k:j], tok))
            k = j


def test_suffix_text_and_single_message(tok_dirs):
    tok = load_tokenizer(tok_dirs["qwen2"])
    obs = {"role": "tool", "content": "4"}
    assert tok.decode(render_turn_suffix("chatml", obs, tok)) == (
        "\n<|im_start|>user\n<tool_response>\n4\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(render_turn_suffix("llama3", obs, tok)) == (
        "<|start_header_id|>ipython<|end_header_id|>\n\n4<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_stop_token_ids(tok_dirs):
    qwen, llama = load_tokenizer(tok_dirs["qwen2"]), load_tokenizer(tok_dirs["llama3"])
    assert stop_token_ids("chatml", qwen) == (qwen.token_to_id("<|im_end|>"),)  # eos is <|im_end|> here
    assert stop_token_ids("llama3", llama) == (llama.token_to_id("<|eot_id|>"), llama.token_to_id("<|eom_id|>"))
    gpt2 = load_tokenizer(tok_dirs["gpt2"])
    assert stop_token_ids("chatml", gpt2) == (gpt2.token_to_id("<|im_end|>"), gpt2.token_to_id("<|endoftext|>"))


def test_messages_may_be_objects(tok_dirs, conversations):
    @dataclasses.dataclass
    class Message:
        role: str
        content: str

    tok = load_tokenizer(tok_dirs["llama3"])
    conv = conversations[0]
    assert render_chat([Message(**m) for m in conv], tok, "llama3", True) == render_chat(conv, tok, "llama3", True)


def test_chatml_assistant_content_starting_with_newline_is_the_documented_exception(tok_dirs):
    """Segment-wise encoding keeps the header's newline apart; whole-text encoding merges it."""
    tok = load_tokenizer(tok_dirs["qwen2"])
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\n\nanswer"}]
    ids, mask = render_chat(conv, tok, "chatml", add_generation_prompt=False)
    whole = reference("qwen2", tok_dirs["qwen2"], "chatml").apply_chat_template(conv, tokenize=True,
                                                                                  return_dict=True)["input_ids"]
    assert ids != list(whole) and tok.decode(ids) == tok.decode(list(whole))
    prompt, _ = render_chat(conv[:1], tok, "chatml", add_generation_prompt=True)
    assert ids[:len(prompt)] == prompt and all(mask[len(prompt):-1]) and mask[-1] == 0


def test_bad_input_is_named(tmp_path, tok_dirs):
    tok = load_tokenizer(tok_dirs["qwen2"])
    user = {"role": "user", "content": "hi"}
    with pytest.raises(ValueError, match="'mistral'"):
        render_chat([user], tok, "mistral", False)
    with pytest.raises(ValueError, match=r"messages\[1\]: role"):
        render_chat([user, {"role": "robot", "content": "x"}], tok, "chatml", False)
    with pytest.raises(ValueError, match=r"messages\[0\]: content"):
        render_chat([{"role": "user", "content": None}], tok, "chatml", False)
    with pytest.raises(ValueError, match="non-empty"):
        render_chat([], tok, "chatml", True)
    with pytest.raises(ValueError, match="assistant turn"):
        render_turn_suffix("chatml", [{"role": "assistant", "content": "x"}], tok)
    bare = train_byte_bpe(["plain text only"] * 20, tmp_path, vocab_size=300, layout="gpt2",
                          special_tokens=("<|endoftext|>",))
    with pytest.raises(ValueError, match=rf"'<\|begin_of_text\|>'.*{bare.source}"):
        render_chat([user], bare, "llama3", False)
    with pytest.raises(ValueError, match=r"'<\|im_end\|>'"):
        stop_token_ids("chatml", bare)


TOOL_CHAT = [{"role": "system", "content": "Use the calculator."}, {"role": "user", "content": "What is 6 * 7?"},
             {"role": "assistant", "content": "<tool_call>6*7</tool_call>"}, {"role": "tool", "content": "42"},
             {"role": "tool", "content": "  (exact)\n"}, {"role": "assistant", "content": " <answer>42</answer> "},
             {"role": "user", "content": "  thanks "}]


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_exported_jinja_template_renders_our_ids(template: str, tmp_path) -> None:
    """HF_CHAT_TEMPLATES[template] (written into exported checkpoints) through transformers'
    apply_chat_template gives render_chat's ids, tool turns and generation prompt included."""
    from transformers import AutoTokenizer

    from hf_fixtures import make_hf_tokenizer
    from vagent_jax.chat_template import detect_template

    make_hf_tokenizer(tmp_path, template=template, regex="llama" if template == "llama3" else "qwen")
    ours, hf = load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    for messages, gen in ((TOOL_CHAT, False), (TOOL_CHAT[:4], True), (TOOL_CHAT[:2], True)):
        ids, _ = render_chat(messages, ours, template, add_generation_prompt=gen)
        assert list(hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen,
                                           return_dict=False)) == ids, (template, len(messages), gen)
    assert detect_template(hf.chat_template) == template
