//! Unit tests of the line splitting, cutting and ring of a log book.

use super::*;

fn book(dir: &std::path::Path, ring_lines: usize, max_line_bytes: usize) -> LogBook {
    let mut spec = crate::spec::LogSpec::in_dir(dir);
    spec.ring_lines = ring_lines;
    spec.max_line_bytes = max_line_bytes;
    LogBook::new(&spec, LogWriter::start().unwrap())
}

fn texts(book: &LogBook) -> Vec<String> {
    book.tail(usize::MAX).into_iter().map(|l| l.text).collect()
}

#[test]
fn lines_split_across_chunks_are_joined() {
    let dir = tempfile::tempdir().unwrap();
    let book = book(dir.path(), 10, 1024);
    let mut partial = Vec::new();
    book.take_chunk(1, Stream::Stderr, &mut partial, b"hel");
    book.take_chunk(1, Stream::Stderr, &mut partial, b"lo\nwor");
    book.take_chunk(1, Stream::Stderr, &mut partial, b"ld\n");
    assert_eq!(texts(&book), ["hello", "world"]);
    assert_eq!(book.counters().lines, 2);
}

#[test]
fn overlong_lines_are_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let book = book(dir.path(), 10, 16);
    let mut partial = Vec::new();
    let long = format!("{}\nshort\n", "x".repeat(40));
    book.take_chunk(1, Stream::Stderr, &mut partial, long.as_bytes());
    assert_eq!(texts(&book), ["x".repeat(16), "short".to_string()]);
    assert_eq!(book.counters().truncated, 1);
}

#[test]
fn an_overlong_line_over_several_chunks_is_cut_once() {
    let dir = tempfile::tempdir().unwrap();
    let book = book(dir.path(), 10, 16);
    let mut partial = Vec::new();
    for _ in 0..5 {
        book.take_chunk(1, Stream::Stdout, &mut partial, &[b'y'; 10]);
    }
    book.take_chunk(1, Stream::Stdout, &mut partial, b"tail\nnext\n");
    assert_eq!(texts(&book), ["y".repeat(16), "next".to_string()]);
    assert_eq!(book.counters(), LogCounters { lines: 2, truncated: 1, dropped: 0 });
}

#[test]
fn the_ring_keeps_only_the_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let book = book(dir.path(), 3, 1024);
    let mut partial = Vec::new();
    book.take_chunk(7, Stream::Stderr, &mut partial, b"1\n2\n3\n4\n");
    book.take_chunk(7, Stream::Stderr, &mut partial, b"5\n");
    assert_eq!(texts(&book), ["3", "4", "5"]);
    assert_eq!(book.tail(2).iter().map(|l| l.generation).collect::<Vec<_>>(), [7, 7]);
}

#[test]
fn an_unterminated_last_line_is_kept_at_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let book = book(dir.path(), 10, 1024);
    let mut partial = Vec::new();
    book.take_chunk(1, Stream::Stderr, &mut partial, b"done\nno newline");
    book.finish(1, Stream::Stderr, &mut partial);
    assert_eq!(texts(&book), ["done", "no newline"]);
}

#[test]
fn lines_reach_the_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let book = book(dir.path(), 10, 1024);
    let mut partial = Vec::new();
    book.take_chunk(1, Stream::Stderr, &mut partial, b"a\nb\n");
    book.writer.flush();
    assert_eq!(std::fs::read_to_string(dir.path().join(writer::CURRENT)).unwrap(), "a\nb\n");
}
