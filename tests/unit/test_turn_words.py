"""What the words of a turn say: unfinished phrases and acknowledgements."""

import pytest

from server.turn_words import (
    OPEN_ALTERNATIVES,
    before_repetition,
    ends_sentence,
    heard_clearly,
    interrupts,
    is_backchannel,
    is_interruption,
    is_short_acknowledgement,
    leaves_open,
    looks_repetitive,
    may_be_open_word,
    same_words,
    sounds_unfinished,
)


@pytest.mark.parametrize(
    "text",
    [
        "Uh-huh.",
        "Mm-hmm.",
        "Okay.",
        "okay okay",
        "Yeah, yeah.",
        "Right.",
        "I see.",
        "Got it!",
        "",
        " ",
    ],
)
def test_acknowledgements_and_noise_are_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize(
    "text",
    [
        "Wait, stop.",
        "Sorry, actually I meant Tuesday.",
        "Hold on.",
        "No.",
        "Yeah, but what about Friday?",
        "Can you repeat that?",
        "Okay, so how much is it?",
    ],
)
def test_requests_and_objections_are_not(text: str) -> None:
    assert not is_backchannel(text)
    assert interrupts(text, 1.5)


def test_unclear_words_wait_for_more_while_clear_ones_interrupt_at_once() -> None:
    assert not interrupts("I", 0.2)  # "I see"
    assert not interrupts("How?", 0.3)  # "uh-huh", misheard
    assert not interrupts("Enema Enema", 0.6)  # "mm-hmm", misheard
    assert interrupts("Stop", 0.2) and interrupts("Sorry", 0.3) and interrupts("One moment", 0.4)
    assert interrupts("Can you tell", 0.5)
    assert not interrupts("Oh okay sure", 0.7)
    assert is_interruption("Hold on a second") and is_interruption("What?")


def test_more_letters_than_the_speech_could_hold_are_a_mishearing() -> None:
    assert not heard_clearly("Dharad. Dharud. Dara. Darud.", 0.3)  # "Got it."
    assert not heard_clearly("it's the music, it's the music", 3.0)  # a loop
    assert heard_clearly("Can you tell", 0.5)
    assert heard_clearly("I have a question about my bill", 1.5)
    assert not interrupts("Dharad. Dharud. Dara. Darud.", 0.3)
    assert is_short_acknowledgement("Dharad. Dharud. Dara. Darud.", 0.3)
    assert not is_short_acknowledgement("Go to the next one", 0.75)


def test_a_short_unclear_utterance_over_the_agent_is_an_acknowledgement() -> None:
    assert is_short_acknowledgement("out.", 0.4)
    assert is_short_acknowledgement("Enema Enema.", 0.6)
    assert is_short_acknowledgement("Uh-huh.", 1.2)
    assert not is_short_acknowledgement("out.", 1.0)  # too long for a mishearing
    assert not is_short_acknowledgement("Stop!", 0.3)
    assert not is_short_acknowledgement("Tell me more", 0.6)


def test_sentence_ends() -> None:
    assert ends_sentence("I need to cancel my order.")
    assert ends_sentence("Where are you from?")
    assert not ends_sentence("I need to cancel my")
    assert not ends_sentence("I was wondering if you could.")
    assert not ends_sentence("So...")


@pytest.mark.parametrize(
    ("text", "unfinished"),
    [
        ("I would like to book a table for", True),
        ("My account number is", True),
        ("I was calling because.", True),
        ("Send it to my", True),
        ("Let me think, um", True),
        ("It's the blue one, and...", True),
        ("I need a table for four.", False),
        ("What are you looking at?", False),
        ("Where are you from?", False),
        ("Is it possible to?", True),
        ("Can you book me a table for?", True),
        ("Is it the?", True),
        ("Can you remind me to call my sister and?", True),  # no question ends on "and"
        ("Do you know where it is?", False),
        ("Are you?", False),
        ("My phone number is 555.", True),  # a number read in groups
        ("My order number is forty.", True),
        ("The code is four two", True),
        ("My phone number is 555-2184.", False),
        ("My account number is seven three one nine.", False),
        ("I am 40.", False),
        ("A table for four.", False),
        ("Four.", False),
        ("Thanks, that's all!", False),
        ("", False),
        # short answers that end on a word which usually opens a phrase
        ("No.", False),
        ("Oh no.", False),
        ("Yes, I do.", False),
        ("I think so.", False),
        ("It is.", False),
        ("Yes, we can.", False),
        ("There is no", True),
        ("My name is", True),
        ("I was wondering if you could", True),
        ("The thing I really want to know is", True),
        ("So", True),
    ],
)
def test_unfinished_phrases(text: str, unfinished: bool) -> None:
    assert sounds_unfinished(text) is unfinished


def test_a_word_in_the_last_place_may_leave_the_phrase_open() -> None:
    assert leaves_open("I need to change my flight", "to", ".")
    assert leaves_open("Can you send the letter", "to", "?")  # no wh-question: still open
    assert not leaves_open("Where are you", "from", "?")
    assert leaves_open("I'd like a table", "for", ".")
    assert "to" in OPEN_ALTERNATIVES and "for" in OPEN_ALTERNATIVES
    # words that end sentences often enough ("That's that.") are no sign of a mishearing
    assert not {"that", "is", "do", "so", "um"} & OPEN_ALTERNATIVES


def test_how_whisper_spells_a_trailing_to_or_for() -> None:
    assert may_be_open_word("I need to change my flight too.")
    assert may_be_open_word("I'd like a table 4.")
    assert may_be_open_word("Can you send the letter tube?")
    assert not may_be_open_word("Is it going to rain tomorrow?")
    assert not may_be_open_word("")


def test_decoding_loops_are_recognised() -> None:
    assert looks_repetitive("Clean council, my appointment on clean council. My appointment on")
    assert looks_repetitive("it's the music, it's the music")
    assert looks_repetitive("no no no no no")
    assert not looks_repetitive("Please cancel my appointment on Friday morning.")
    assert not looks_repetitive("I said no, no.")


@pytest.mark.parametrize(
    ("looped", "kept"),
    [
        (
            "Call me back at 555. Call me Back at 5555. Call Me Back at 555.",
            "Call me back at 555.",
        ),  # a final decode of 8 kHz speech on CI's machine
        ("it's the music, it's the music", "it's the music"),
        ("no no no no no", "no"),
        ("I need a b for a b and a b then", "I need a b for a b and"),  # a bigram a third time
    ],
)
def test_a_loop_is_cut_where_it_begins(looped: str, kept: str) -> None:
    assert before_repetition(looped) == kept
    assert not looks_repetitive(kept)


@pytest.mark.parametrize(
    "text",
    [
        "Please cancel my appointment on Friday morning.",
        "I said no, no.",
        "Thank you. Thank you so much.",
        "",
    ],
)
def test_text_that_does_not_loop_is_kept_whole(text: str) -> None:
    assert before_repetition(text) == text


def test_same_words_ignores_case_and_punctuation() -> None:
    assert same_words("Is it open on Mondays?", "is it open on mondays.")
    assert not same_words("Is it open on Monday?", "Is it open on Mondays?")


def test_words_the_recognizer_was_unsure_of_do_not_stop_the_agent() -> None:
    # Whisper's "mm-hmm" 0.3-0.45 s in, at its mean log probability; then real words
    assert not interrupts("In a month.", 0.3, log_prob=-1.08)
    assert is_short_acknowledgement("In my mom.", 0.45, log_prob=-0.8)
    assert interrupts("Can you tell", 0.5, log_prob=-0.3)
    assert not is_short_acknowledgement("Tell me more", 0.6, log_prob=-0.3)
    # an interruption word stops it however unsure; long speech is never an acknowledgement
    assert interrupts("Wait a moment.", 0.45, log_prob=-1.2)
    assert not is_short_acknowledgement("In a month.", 1.0, log_prob=-1.5)
    assert not heard_clearly("Can you tell", 0.5, log_prob=-0.9)
