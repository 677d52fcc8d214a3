"""Chat templates rendered straight to token ids with a mask of the tokens the policy generates.

Two formats, written from their public chat templates:
- "chatml": Qwen2.5's format. Each turn is `<|im_start|>{role}\\n{content}<|im_end|>\\n`; tool results
  go into a user turn as `\\n<tool_response>\\n{content}\\n</tool_response>`, consecutive tool messages
  sharing one user turn. Qwen2.5's default system prompt (added when a conversation has none), the
  tools schema in the system turn and `tool_calls` fields are not rendered: the agent writes its
  <tool_call> blocks in the assistant content, which is what it generates.
- "llama3": Llama 3's header format. `<|begin_of_text|>` then, per turn,
  `<|start_header_id|>{role}<|end_header_id|>\\n\\n{content.strip()}<|eot_id|>`. Tool results use
  Llama 3.1's `ipython` role with the content as is (not stripped, not JSON-quoted); the 3.1 date
  system prompt is not injected.
Generation prompts: `<|im_start|>assistant\\n` and `<|start_header_id|>assistant<|end_header_id|>\\n\\n`.

Token ids are the tokenizer's encoding of the rendered text, one piece at a time: text before the
assistant content, then content + end token, then the rest. The cut points are special tokens and
the newline that ends a role header, which byte-level BPE pre-tokenisers (Qwen2, Llama 3 regexes) and
tokenizers trained by `train_sentencepiece` do not merge across, so the ids equal transformers'
apply_chat_template; they also equal what the decode engine holds (prompt ids + generated ids +
`render_turn_suffix` ids). One exception, ChatML only (Llama 3 strips the content): an assistant content
starting with whitespace that holds a newline, which whole-text tokenisation merges with the header's
newline. There the ids here are the ones the policy produces after the generation prompt, which is
what training needs. GPT-2's regex splits whitespace by what follows it, so it gives no such guarantee.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vagent_jax.tokenizer import Tokenizer

TEMPLATES: tuple[str, ...] = ("chatml", "llama3")
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")

_CHATML_GEN = "<|im_start|>assistant\n"
_LLAMA3_GEN = "<|start_header_id|>assistant<|end_header_id|>\n\n"
# Tokens each template writes; a tokenizer must hold each as one id.
_REQUIRED = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "llama3": ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
}
_CHATML_TOOL_TOKENS = ("<tool_response>", "</tool_response>")

Segment = tuple[str, int]  # (text, 1 if the policy generates it else 0)


def _fields(message: Any, where: str) -> tuple[str, str]:
    """(role, content) of a dict or an object with `role` and `content`."""
    if isinstance(message, Mapping):
        role, content = message.get("role"), message.get("content")
    else:
        role, content = getattr(message, "role", None), getattr(message, "content", None)
    if role not in ROLES:
        raise ValueError(f"{where}: role must be one of {ROLES}, got {role!r}")
    if not isinstance(content, str):
        raise ValueError(f"{where}: content must be a str, got {type(content).__name__}")
    return role, content


def _check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"chat template must be one of {TEMPLATES}, got {template!r}")


def _single_id(tokenizer: Tokenizer, token: str, template: str) -> int:
    """Id of a template token, which must encode as exactly that one id."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None or tokenizer.encode(token) != [token_id]:
        raise ValueError(
            f"chat template {template!r} needs {token!r} as a single token, which tokenizer "
            f"{tokenizer.source} lacks"
        )
    return token_id


def _check_tokens(template: str, tokenizer: Tokenizer, turns: Sequence[tuple[str, str]]) -> None:
    needed = list(_REQUIRED[template])
    if template == "chatml" and any(role == "tool" for role, _ in turns):
        needed.extend(_CHATML_TOOL_TOKENS)
    for token in needed:
        _single_id(tokenizer, token, template)


def _chatml_turns(turns: Sequence[tuple[str, str]], prev_role: str | None) -> list[Segment]:
    """Segments of ChatML turns; `prev_role` is the role of the turn before the first one."""
    segments: list[Segment] = []
    for k, (role, content) in enumerate(turns):
        if role == "assistant":
            segments += [(_CHATML_GEN, 0), (content + "<|im_end|>", 1), ("\n", 0)]
        elif role == "tool":
            before = turns[k - 1][0] if k > 0 else prev_role
            after = turns[k + 1][0] if k + 1 < len(turns) else None
            opener = "<|im_start|>user" if before != "tool" else ""
            closer = "<|im_end|>\n" if after != "tool" else ""
            segments.append((f"{opener}\n<tool_response>\n{content}\n</tool_response>{closer}", 0))
        else:
            segments.append((f"<|im_start|>{role}\n{content}<|im_end|>\n", 0))
    return segments


def _llama3_turns(turns: Sequence[tuple[str, str]]) -> list[Segment]:
    """Segments of Llama 3 turns (no <|begin_of_text|>)."""
    segments: list[Segment] = []
    for role, content in turns:
        if role == "assistant":
            segments += [(_LLAMA3_GEN, 0), (content.strip() + "<|eot_id|>", 1)]
        elif role == "tool":
            segments.append((f"<|start_header_id|>ipython<|end_header_id|>\n\n{content}<|eot_id|>", 0))
        else:
            segments.append((f"<|start_header_id|>{role}<|end_header_id|>\n\n{content.strip()}<|eot_id|>", 0))
    return segments


def _encode_segments(segments: Sequence[Segment], tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """Encode runs of equal mask as one text each; return ids and the per-token mask."""
    ids: list[int] = []
    mask: list[int] = []
    run_text, run_mask = "", None
    for text, flag in [*segments, ("", -1)]:
        if flag != run_mask and run_mask is not None:
            if run_text:
                run_ids = tokenizer.encode(run_text)
                ids += run_ids
                mask += [run_mask] * len(run_ids)
            run_text = ""
        run_text += text
        run_mask = flag
    return ids, mask


def render_chat(
    messages: Sequence[Any],
    tokenizer: Tokenizer,
    template: str,
    add_generation_prompt: bool,
) -> tuple[list[int], list[int]]:
    """Token ids of a conversation in `template`, and assistant_mask (1 on each assistant turn's content
    and end token <|im_end|> / <|eot_id|>, 0 on system, user, tool turns and role headers).

    With add_generation_prompt the ids end with the assistant header the policy continues from."""
    _check_template(template)
    if isinstance(messages, (str, Mapping)) or not messages:
        raise ValueError("render_chat: messages must be a non-empty sequence of messages")
    turns = [_fields(m, f"messages[{i}]") for i, m in enumerate(messages)]
    _check_tokens(template, tokenizer, turns)
    if template == "chatml":
        segments = _chatml_turns(turns, prev_role=None)
        if add_generation_prompt:
            segments.append((_CHATML_GEN, 0))
    else:
        segments = [("<|begin_of_text|>", 0), *_llama3_turns(turns)]
        if add_generation_prompt:
            segments.append((_LLAMA3_GEN, 0))
    return _encode_segments(segments, tokenizer)


def render_turn_suffix(template: str, message: Any, tokenizer: Tokenizer) -> list[int]:
    """Ids that follow an assistant turn ended by its end token: the observation turn(s) in `message`
    (one message or a sequence: user or tool turns) and the next assistant header.

    ChatML: the newline after the assistant's <|im_end|> is not generated by the policy (it is a
    template token, mask 0), so the suffix starts with it: "\\n<|im_start|>user\\n<tool_response>\\n...
    <|im_end|>\\n<|im_start|>assistant\\n". Thus prompt ids + generated ids (content + <|im_end|>) +
    suffix ids == render_chat(conversation, add_generation_prompt=True) ids. Llama 3 needs no such
    newline: the suffix is "<|start_header_id|>ipython<|end_header_id|>\\n\\n...<|eot_id|>" + header."""
    _check_template(template)
    items = [message] if isinstance(message, Mapping) or hasattr(message, "role") else list(message)
    if not items:
        raise ValueError("render_turn_suffix: message holds no turn")
    turns = [_fields(m, f"suffix message[{i}]") for i, m in enumerate(items)]
    for i, (role, _) in enumerate(turns):
        if role == "assistant":
            raise ValueError(f"render_turn_suffix: message[{i}] is an assistant turn; the policy generates those")
    _check_tokens(template, tokenizer, turns)
    if template == "chatml":
        segments = [("\n", 0), *_chatml_turns(turns, prev_role="assistant"), (_CHATML_GEN, 0)]
    else:
        segments = [*_llama3_turns(turns), (_LLAMA3_GEN, 0)]
    return _encode_segments(segments, tokenizer)[0]


def stop_token_ids(template: str, tokenizer: Tokenizer) -> tuple[int, ...]:
    """Ids that end an assistant turn: the template's end token (<|im_end|> or <|eot_id|>), then
    Llama 3.1's <|eom_id|> when present, then the tokenizer's eos when it differs."""
    _check_template(template)
    end = "<|im_end|>" if template == "chatml" else "<|eot_id|>"
    ids = [_single_id(tokenizer, end, template)]
    if template == "llama3":
        eom = tokenizer.token_to_id("<|eom_id|>")
        if eom is not None:
            ids.append(eom)
    ids.append(tokenizer.eos_id)
    return tuple(dict.fromkeys(ids))


# The same formats as Jinja chat templates (tokenizer_config.json's `chat_template`), written into exported
# checkpoints so transformers' apply_chat_template renders what the policy was trained on.
HF_CHAT_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{%- for message in messages %}"
        "{%- if message['role'] == 'tool' %}"
        "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
        "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
        "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
        "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"),
    "llama3": (
        "{{- '<|begin_of_text|>' }}{%- for message in messages %}"
        "{%- if message['role'] == 'tool' %}"
        "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
        "{%- else %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
        "+ message['content'] | trim + '<|eot_id|>' }}"
        "{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"),
}


def detect_template(jinja: str) -> str | None:
    """Which of TEMPLATES a Hugging Face Jinja chat template writes (by its turn markers), None if neither."""
    if "<|im_start|>" in jinja:
        return "chatml"
    if "<|start_header_id|>" in jinja:
        return "llama3"
    return None
