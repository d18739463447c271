"""TokenCounter and the one-at-a-time batch loop shared by the in-process engines."""

from backends.base import GenRequest, GenResult
from backends.streaming import TokenCounter, one_at_a_time

EOS = 2


def request(idx, max_tokens, ignore_eos=True):
    return GenRequest(idx, "x", (1, 5, 6), max_tokens, ignore_eos)


def test_each_row_stops_at_its_own_limit():
    events = []
    counter = TokenCounter([request(0, 2), request(1, 3)], {EOS}, lambda i, n: events.append(i))
    done = [counter.add(row, 7) for _ in range(4) for row in (0, 1)]
    assert done == [False, False, True, False, True, True, True, True]
    assert events == [0, 1, 0, 1, 1]
    assert counter.longest == 3 and counter.all_done
    assert counter.results() == [GenResult(0, 2), GenResult(1, 3)]


def test_eos_ends_a_row_uncounted_unless_ignored():
    events = []
    counter = TokenCounter(
        [request(0, 5, ignore_eos=False), request(1, 5)], {EOS}, lambda i, n: events.append(i)
    )
    for token in (7, EOS, 7):
        counter.add(0, token)
        counter.add(1, token)
    assert counter.results() == [GenResult(0, 1), GenResult(1, 3)]
    assert counter.done == [True, False]
    assert events == [0, 1, 1, 1]


def test_one_at_a_time_serves_requests_in_order():
    seen = []

    def generate(batch):
        seen.append([r.idx for r in batch])
        return [GenResult(r.idx, r.max_tokens) for r in batch]

    results = one_at_a_time([request(3, 1), request(4, 2)], generate)
    assert seen == [[3], [4]]
    assert results == [GenResult(3, 1), GenResult(4, 2)]
