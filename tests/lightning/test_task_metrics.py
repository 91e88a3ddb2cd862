"""Metrics and baselines of the long-document tasks (longdoc.lightning.task_metrics) against scikit-learn, seqeval
and hand-counted examples."""

import math

import numpy as np
import pytest
import torch
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics import precision_score as seqeval_precision
from seqeval.metrics import recall_score as seqeval_recall
from seqeval.scheme import IOB2
from sklearn.metrics import f1_score

from longdoc.lightning.task_metrics import (MostFrequentTagBaseline, SeqevalScores, SquadScores, check_bio,
                                            check_bio_label_names, label_set_baseline_f1, most_frequent_label_set,
                                            multilabel_f1_metrics, normalize_answer, seqeval_scores,
                                            squad_exact_match, squad_f1, squad_scores)

# ------------------------------------------------------------------------------------------------ multi-label


@pytest.mark.parametrize("seed,threshold", [(0, 0.5), (1, 0.5), (2, 0.3), (3, 0.8)])
def test_multilabel_f1_equals_sklearn(seed, threshold):
    rng = np.random.default_rng(seed)
    num_labels, rows = 6, 50
    logits = rng.normal(0.0, 2.0, (rows, num_labels)).astype(np.float32)
    target = (rng.random((rows, num_labels)) < 0.35).astype(np.int64)
    ignored = rng.random(rows) < 0.1  # samples repeated for DDP: a row of -100
    target_in = target.copy()
    target_in[ignored] = -100
    metrics = multilabel_f1_metrics(num_labels, threshold)
    for chunk in np.array_split(np.arange(rows), 3):  # accumulated over batches
        metrics.update(torch.from_numpy(logits[chunk]), torch.from_numpy(target_in[chunk]))
    got = metrics.compute()
    pred = logits > math.log(threshold / (1 - threshold))  # sigmoid(z) > t  <=>  z > logit(t)
    keep = ~ignored
    for avg in ("micro", "macro"):
        expected = f1_score(target[keep], pred[keep], average=avg, zero_division=0)
        assert got[f"f1_{avg}"].item() == pytest.approx(expected, abs=1e-6)


def test_multilabel_f1_reads_logits_even_inside_0_1():
    # logits 0.3 and 0.6 are both positive: sigmoid > 0.5, so both labels are predicted (probabilities 0.3 / 0.6
    # would predict only the second)
    metrics = multilabel_f1_metrics(2)
    metrics.update(torch.tensor([[0.3, 0.6]]), torch.tensor([[1, 1]]))
    assert metrics.compute()["f1_micro"].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"threshold=1.5"):
        multilabel_f1_metrics(3, threshold=1.5)


def test_most_frequent_label_set_and_its_f1_by_hand():
    train = [[1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert most_frequent_label_set(train).tolist() == [True, False, True]  # 2 x {0, 2}, tie with 2 x {1}: first seen
    assert most_frequent_label_set([[0, 1], [1, 0], [1, 0]]).tolist() == [True, False]
    split = [[1, 0, 1], [1, 1, 0]]
    # predict {0, 2} twice. micro: TP 3, FP 1, FN 1 -> 3/4. macro: label 0: 1, label 1: 0 (TP 0, FN 1),
    # label 2: P 1/2 R 1 -> 2/3; mean 5/9
    got = label_set_baseline_f1(most_frequent_label_set(train), split)
    assert got["f1_micro"] == pytest.approx(0.75) and got["f1_macro"] == pytest.approx(5 / 9)
    preds = np.array([[1, 0, 1]] * 2)
    assert got["f1_macro"] == pytest.approx(f1_score(np.array(split), preds, average="macro", zero_division=0))
    with pytest.raises(ValueError, match=r"train_labels\[1, 2\]=2"):
        most_frequent_label_set([[0, 1, 0], [1, 0, 2]])


# --------------------------------------------------------------------------------------- token classification

NAMES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
ID = {n: i for i, n in enumerate(NAMES)}


def test_entity_scores_hand_counted():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "B-LOC"]]
    # gold entities: PER 0-1, LOC 3; predicted: PER 0-1, ORG 3, LOC 4; correct: PER only
    # P = 1/3, R = 1/2, F1 = 2 (1/3)(1/2) / (1/3 + 1/2) = 2/5; tags equal at 0, 1, 2: accuracy 3/5
    got = seqeval_scores(gold, pred)
    assert got == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 0.4, "accuracy": 0.6})
    metric = SeqevalScores(NAMES)
    metric.update(torch.tensor([[ID[t] for t in pred[0]] + [0]]), torch.tensor([[ID[t] for t in gold[0]] + [-100]]))
    assert {k: v.item() for k, v in metric.compute().items()} == pytest.approx(got)


def test_strict_mode_drops_entities_that_start_with_i():
    gold, pred = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    # conlleval chunking: the predicted I-PER I-PER is PER 0-1, a match; strict IOB2: not an entity
    assert seqeval_scores(gold, pred)["f1"] == 1.0
    assert seqeval_scores(gold, pred, mode="strict") == pytest.approx(
        {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 2 / 3})
    with pytest.raises(ValueError, match=r"mode='loose' is unknown"):
        seqeval_scores(gold, pred, mode="loose")


GOLD = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"], ["O", "B-ORG", "I-ORG", "I-ORG"], ["B-LOC"],
        ["O", "B-PER", "O", "B-PER", "I-PER", "O", "B-ORG"]]
PRED = [["B-PER", "I-PER", "O", "B-LOC", "O", "O"], ["O", "B-ORG", "I-ORG", "I-ORG"], ["O"],
        ["O", "B-PER", "I-PER", "B-PER", "I-PER", "O", "I-ORG"]]


def padded(seqs, width=8):
    """(B, width) ids of tag-name sequences, -100 after each (and -100 at position 0: a [CLS] without a label)."""
    out = torch.full((len(seqs), width), -100)
    for i, seq in enumerate(seqs):
        out[i, 1:1 + len(seq)] = torch.tensor([ID[t] for t in seq])
    return out


@pytest.mark.parametrize("mode", [None, "strict"])
def test_seqeval_metric_accumulates_batches_like_seqeval(mode):
    opts = {"mode": "strict", "scheme": IOB2} if mode else {}
    expected = {"precision": seqeval_precision(GOLD, PRED, **opts), "recall": seqeval_recall(GOLD, PRED, **opts),
                "f1": seqeval_f1(GOLD, PRED, **opts)}
    metric = SeqevalScores(NAMES, mode=mode)
    target = padded(GOLD)
    preds = torch.where(target == -100, 0, padded(PRED))  # predictions at unlabelled positions are dropped
    metric.update(preds[:2], target[:2])
    logits = torch.nn.functional.one_hot(preds[2:], len(NAMES)).float()  # (B, N, C) logits: argmax taken
    metric.update(logits, target[2:])
    metric.update(torch.zeros(1, 8, dtype=torch.long), torch.full((1, 8), -100))  # a DDP repeat: no sequence
    got = {k: v.item() for k, v in metric.compute().items()}
    assert got["accuracy"] == pytest.approx(14 / 18)  # counted by hand: 4 tags differ out of 18
    assert {k: got[k] for k in expected} == pytest.approx(expected)


def test_seqeval_states_concatenate_across_processes():
    """What a DDP gather does to the list states (cat, in rank order) keeps the sequences intact."""
    target = padded(GOLD)
    preds = torch.where(target == -100, 0, padded(PRED))
    rank0, rank1, whole = SeqevalScores(NAMES), SeqevalScores(NAMES), SeqevalScores(NAMES)
    rank0.update(preds[:3], target[:3])
    rank1.update(preds[3:], target[3:])
    whole.update(preds, target)
    rank0.merge_state(rank1)
    assert {k: v.item() for k, v in rank0.compute().items()} == {k: v.item() for k, v in whole.compute().items()}


def test_seqeval_metric_refuses_bad_ids_and_names():
    metric = SeqevalScores(NAMES)
    with pytest.raises(ValueError, match=r"target\[0, 1\]=7 is not a tag id: label_names has 7 tags"):
        metric.update(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[0, 7, -100]]))
    with pytest.raises(ValueError, match=r"label_names\[1\]='PER' is not a BIO tag"):
        SeqevalScores(["O", "PER"])
    with pytest.raises(ValueError, match=r"label_names\[2\]='B-PER' repeats label_names\[1\]"):
        check_bio_label_names(["O", "B-PER", "B-PER"])
    with pytest.warns(UserWarning, match=r"called before the ``update``"):  # torchmetrics' own warning
        empty = SeqevalScores(NAMES).compute()
    assert {k: v.item() for k, v in empty.items()} == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}


def test_check_bio_names_the_bad_tag_and_position():
    check_bio(["O", "B-PER", "I-PER", "B-LOC", "B-LOC", "I-LOC", "O"])
    with pytest.raises(ValueError, match=r"doc 3: tag 2 is 'I-LOC' after 'B-PER'.*start the entity with B-LOC"):
        check_bio(["O", "B-PER", "I-LOC"], where="doc 3")
    with pytest.raises(ValueError, match=r"tag 0 is 'I-PER' after the start of the sequence"):
        check_bio(["I-PER", "O"])
    with pytest.raises(ValueError, match=r"tag 1 is 'I-PER' after 'O'"):
        check_bio(["O", "I-PER"])
    with pytest.raises(ValueError, match=r"tag 1 is 'PER', which is not a BIO tag"):
        check_bio(["O", "PER"])


def test_most_frequent_tag_baseline_by_hand():
    baseline = MostFrequentTagBaseline.fit(
        [["Paris", "is", "nice"], ["Paris", "Hilton", "is"]], [["B-LOC", "O", "O"], ["B-PER", "I-PER", "O"]])
    # Paris: B-LOC once, B-PER once -> the first seen; Hilton: I-PER; unseen tokens: O (3 of the 6 tags)
    assert baseline.predict(["Paris", "Hilton", "rocks"]) == ["B-LOC", "I-PER", "O"]
    assert baseline.default == "O"
    got = baseline.score([["Paris", "Hilton", "rocks"], ["Paris", "is", "nice"]],
                         [["B-PER", "I-PER", "O"], ["B-LOC", "O", "O"]])
    # predicted entities: LOC 0 and PER 1 (sentence 1), LOC 0 (sentence 2); gold: PER 0-1, LOC 0; correct: 1
    # P = 1/3, R = 1/2, F1 = 2/5; tags right: 2 of 3 + 3 of 3 = 5/6
    assert got == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 0.4, "accuracy": 5 / 6})
    with pytest.raises(ValueError, match=r"training sequence 0 has 2 tokens but 1 tags"):
        MostFrequentTagBaseline.fit([["a", "b"]], [["O"]])


# ------------------------------------------------------------------------------------------------------ SQuAD


def test_squad_normalisation_by_hand():
    assert normalize_answer("The  Cat!") == "cat"
    assert squad_exact_match("The  Cat!", "cat") == 1
    assert normalize_answer("  An apple,   a pear and THE plum. ") == "apple pear and plum"
    assert normalize_answer("theater anatomy") == "theater anatomy"  # articles only as whole words
    assert normalize_answer("U.S.A.") == "usa"
    assert normalize_answer("a\tb\nthe c") == "b c"
    assert squad_exact_match("cats", "cat") == 0


def test_squad_f1_by_hand():
    # pred tokens: cat sat on mat; gold: cat on mat; common 3: P = 3/4, R = 1, F1 = 6/7
    assert squad_f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # multiplicity: pred cat cat, gold cat: common 1, P = 1/2, R = 1 -> 2/3
    assert squad_f1("cat cat", "the cat") == pytest.approx(2 / 3)
    assert squad_f1("dog", "cat") == 0.0
    assert squad_f1("", "") == 1.0 and squad_f1("the", "") == 1.0 and squad_f1("cat", "") == 0.0
    # max over gold answers; unanswerable ([] or only answers that normalise to "") means the gold ""
    assert squad_scores("cat", ["dog", "the cat"]) == (1, 1.0)
    assert squad_scores("big cat", ["dog", "a cat"]) == (0, pytest.approx(2 / 3))
    assert squad_scores("", []) == (1, 1.0) and squad_scores("", ["The", "."]) == (1, 1.0)
    assert squad_scores("cat", []) == (0, 0.0)
    # a gold answer that normalises to "" is dropped when others remain: "" no longer matches "The"
    assert squad_scores("", ["The", "cat"]) == (0, 0.0)
    with pytest.raises(ValueError, match=r"golds='cat' is one string"):
        squad_scores("cat", "cat")


def test_squad_accumulator_in_percent_and_mergeable():
    preds = ["The  Cat!", "the cat sat on the mat", "", "dog"]
    golds = [["cat"], ["a cat on a mat", "dog"], [], ["cat"]]
    # EM: 1, 0, 1, 0; F1: 1, 6/7, 1, 0
    metric = SquadScores()
    metric.update(preds[:2], golds[:2])
    other = SquadScores()
    other.update(preds[2:], golds[2:])
    metric.merge_state(other)  # what a DDP reduction of the sum states does
    got = metric.compute()
    assert got["exact_match"].item() == pytest.approx(50.0)
    assert got["f1"].item() == pytest.approx(100 * (1 + 6 / 7 + 1 + 0) / 4)
    with pytest.raises(ValueError, match=r"same length"):
        metric.update(["a"], [["a"], ["b"]])
