"""Word ownership across overlapping windows (workers/transcript.py): each word published once,
in order, at hop borders too, although two windows time and spell it differently."""

from __future__ import annotations

import random

import pytest

from workers.schemas import Word
from workers.transcript import GUARD_SECONDS, SessionTranscript, normalise

pytestmark = pytest.mark.unit


def w(text: str, start: float, end: float) -> Word:
    return Word(text, start, end, 0.9)


def texts(words: list[Word]) -> list[str]:
    return [x.text for x in words]


def test_the_first_window_owns_its_words_up_to_the_guard_before_its_end() -> None:
    st = SessionTranscript()
    heard = [w("Hello", 0.3, 0.7), w("there", 0.7, 3.70), w("my", 3.70, 3.80)]
    assert texts(st.own(heard, media_end=4.0)) == ["Hello", "there"]
    # Handed out up to the last word it heard before its limit (4 - guard), not beyond.
    assert st.until == pytest.approx(3.70)


def test_a_hop_the_window_did_not_hear_is_owned_by_the_next_window() -> None:
    """tiny.en gives some windows that start mid-phrase one stray word at their very end (seen
    in the nonstop-talk benchmark). Windows [0, 4), [2, 6), [4, 8): the second hears only that
    stray word, so the words of [4, 5.75) are heard by the third window alone, at its start,
    and must be published by it, not lost."""
    first = [w("Hello", 0.3, 0.7), w("world", 0.8, 1.6), w("this", 2.0, 3.6)]
    stray = [w("and", 5.9, 5.98)]  # in the guard: owned by nobody, so nothing was heard
    third = [w("is", 4.1, 4.4), w("a", 4.5, 4.6), w("test", 4.7, 5.2), w("of", 5.9, 6.2)]
    st = SessionTranscript()
    got = st.own(first, 4.0) + st.own(stray, 6.0) + st.own(third, 8.0)
    assert texts(got) == ["Hello", "world", "this", "is", "a", "test", "of"]
    # Without the hand-back the second window's limit (5.75) is where the third starts owning.
    old = SessionTranscript(handback=False)
    got = old.own(first, 4.0) + old.own(stray, 6.0) + old.own(third, 8.0)
    assert texts(got) == ["Hello", "world", "this", "of"]


@pytest.mark.parametrize("end", [3.74, 3.75, 3.76])
def test_a_word_ending_at_a_hop_border_is_published_by_exactly_one_window(end: float) -> None:
    """Window [0, 4) and window [2, 6) both hear the word, with the same times: whichever side
    of the border (4 - guard) its end falls on, one of them publishes it."""
    st = SessionTranscript()
    word = w("border", end - 0.3, end)
    first = st.own([w("a", 1.0, 1.2), word], media_end=4.0)
    second = st.own([word, w("b", 4.5, 4.8)], media_end=6.0)
    assert texts(first + second) == ["a", "border", "b"]
    owner = first if end < 4.0 - GUARD_SECONDS else second
    assert word in owner


def test_a_word_heard_twice_with_other_times_and_spelling_is_published_once() -> None:
    """Window 0 hears "three" ending just before the border, window 1 "free" ending after it:
    one sound, two spellings; the second would be published again without the overlap test."""
    st = SessionTranscript()
    first = st.own([w("for", 3.2, 3.4), w("three", 3.4, 3.72)], media_end=4.0)
    second = st.own([w("for", 3.22, 3.42), w("free", 3.44, 3.80), w("days.", 3.8, 4.1)], 6.0)
    assert texts(first + second) == ["for", "three", "days."]


def test_a_word_left_to_the_next_window_is_not_lost_when_its_end_moves_earlier() -> None:
    """Window 0 hears half a word at its end (left to window 1 by the guard); window 1 hears it
    whole but ends it just before the border: it is still published, by window 1."""
    st = SessionTranscript()
    first = st.own([w("the", 3.3, 3.5), w("recog", 3.5, 3.98)], media_end=4.0)
    second = st.own([w("the", 3.31, 3.5), w("recognition", 3.5, 3.70), w("works", 4.0, 4.4)], 6.0)
    assert texts(first + second) == ["the", "recognition", "works"]


def test_a_zero_length_guess_at_a_window_end_is_not_a_second_word() -> None:
    """Whisper ends a cut word at the window's end with no duration ("time." 3.98-3.98): left to
    the next window, which hears "time" whole, and never published beside it."""
    st = SessionTranscript()
    first = st.own([w("a", 3.40, 3.52), w("long", 3.52, 3.74), w("time.", 3.98, 3.98)], 4.0)
    second = st.own([w("long", 3.54, 3.77), w("time", 4.02, 4.44), w("since", 4.44, 4.76)], 6.0)
    assert texts(first + second) == ["a", "long", "time", "since"]


def test_a_repeated_word_across_the_border_is_two_words() -> None:
    """ "no, no": same spelling, ends 0.3 s apart: not one word heard twice."""
    st = SessionTranscript()
    first = st.own([w("No,", 3.35, 3.6)], media_end=4.0)
    second = st.own([w("No,", 3.36, 3.6), w("no.", 3.62, 3.9)], media_end=6.0)
    assert texts(first + second) == ["No,", "no."]


def test_the_last_window_owns_everything_up_to_its_end() -> None:
    st = SessionTranscript()
    st.own([w("one", 1.0, 1.4)], media_end=4.0)
    last = st.own([w("two", 3.0, 3.5), w("three.", 4.5, 4.99)], media_end=5.0, last=True)
    assert texts(last) == ["two", "three."]


def test_a_dropped_window_leaves_its_words_to_the_next_one() -> None:
    """Window [2, 6) never reached ownership (dropped as backlog): window [4, 8) publishes the
    words it heard that window [2, 6) would have."""
    st = SessionTranscript()
    assert texts(st.own([w("one", 1.0, 1.4)], media_end=4.0)) == ["one"]
    third = st.own([w("four", 4.2, 4.6), w("five", 5.2, 5.6), w("six", 6.2, 6.6)], 8.0)
    assert texts(third) == ["four", "five", "six"]


def _speech(rng: random.Random, seconds: float) -> list[Word]:
    """Words of 0.2 to 0.5 s with pauses of up to 0.3 s, as spoken."""
    out, t, i = [], rng.uniform(0.0, 0.5), 0
    while t < seconds:
        d = rng.uniform(0.2, 0.5)
        out.append(w(f"word{i}", round(t, 3), round(t + d, 3)))
        t += d + rng.choice([0.0, 0.0, rng.uniform(0.0, 0.3)])
        i += 1
    return out


def _heard(rng: random.Random, spoken: list[Word], start: float, end: float) -> list[Word]:
    """What one window [start, end) recognises: times off by up to 40 ms; a word cut by the
    window's end missing, or ended just before the cut under another spelling; a word cut by
    its start missing, or started at the cut."""
    out = []
    for x in spoken:
        if x.media_end <= start or x.media_start >= end:
            continue
        a = x.media_start + rng.uniform(-0.04, 0.04)
        b = x.media_end + rng.uniform(-0.04, 0.04)
        text = x.text
        if x.media_end > end:
            if rng.random() < 0.5:
                continue
            b, text = end - rng.uniform(0.0, 0.05), "guess"  # Whisper names the half it heard
        if x.media_start < start:
            if rng.random() < 0.5:
                continue
            a = start
        out.append(w(text, max(start, a), min(end, max(a, b))))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_each_word_of_a_long_stream_is_published_once_in_order(seed: int) -> None:
    """Random speech through 4 s windows with a 2 s hop, each window hearing it with its own
    timing errors and its own guesses at cut words: the published words are the spoken ones,
    each once, in order."""
    rng = random.Random(seed)
    spoken = _speech(rng, 30.0)
    st = SessionTranscript()
    published: list[Word] = []
    k = 0
    while 2.0 * k < 32.0:
        start, end = 2.0 * k, 2.0 * k + 4.0
        last = end >= 32.0
        published += st.own(_heard(rng, spoken, start, end), end, last)
        k += 1
    assert [normalise(x.text) for x in published] == [normalise(x.text) for x in spoken]
