from server.sentences import SentenceSplitter, speakable


def feed(text: str) -> list[str]:
    splitter = SentenceSplitter()
    pieces: list[str] = []
    for i, word in enumerate(text.split(" ")):
        pieces += splitter.push(word if i == 0 else " " + word)
    return pieces + splitter.flush()


def test_first_piece_is_cut_early_then_whole_sentences() -> None:
    pieces = feed(
        "The capital is Paris, a city known for art. It has the Eiffel Tower! Anything else?"
    )
    assert pieces == [
        "The capital is Paris,",
        "a city known for art.",
        "It has the Eiffel Tower!",
        "Anything else?",
    ]


def test_first_piece_without_a_comma_is_cut_after_four_words() -> None:
    pieces = feed("The capital of France is Paris. It is lovely.")
    assert pieces == ["The capital of France", "is Paris.", "It is lovely."]


def test_short_opening_comma_is_not_a_piece() -> None:
    assert feed("Yes, it is. Good.") == ["Yes, it is.", "Good."]


def test_long_first_sentence_is_cut_after_a_few_words_then_after_about_eight() -> None:
    text = "one two three four five six seven eight nine ten eleven twelve thirteen."
    pieces = feed(text)
    assert [len(p.split()) for p in pieces] == [3, 8, 2]
    assert " ".join(pieces).split() == text.split()


def test_the_second_piece_ends_on_a_word_that_can_end_a_phrase() -> None:
    pieces = feed(
        'A good name for a small gray cat could be "Zephyr" or "Puff" to give it a playful '
        "touch. It suits a cat."
    )
    assert pieces == [
        "A good name",
        'for a small gray cat could be "Zephyr"',
        'or "Puff" to give it a playful touch.',
        "It suits a cat.",
    ]
    assert feed("Sure, the shop opens at nine and closes at the end of the day.") == [
        "Sure, the shop",
        "opens at nine and closes at the end",
        "of the day.",
    ]


def test_nothing_is_lost() -> None:
    text = "Hmm. Well, let me think: maybe; yes... Sure thing! Bye"
    assert " ".join(feed(text)).split() == text.split()


def test_speakable_drops_markdown() -> None:
    assert speakable("**Paris** is `nice`\n- really") == "Paris is nice really"


def test_first_piece_is_three_words_when_the_third_can_end_a_phrase() -> None:
    pieces = feed("A rainbow forms when sunlight hits raindrops. It is pretty.")
    assert pieces == ["A rainbow forms", "when sunlight hits raindrops.", "It is pretty."]


def test_first_piece_never_ends_on_a_word_that_leads_on() -> None:
    pieces = feed("You can call the front desk or the billing team today")
    assert pieces[0] == "You can call"
    assert feed("It is the one in the middle")[0] == "It is the one"
    assert len(feed("of the in to a of the for and more words")[0].split()) == 6  # at most 6
