//! The record codec and the scan, on frames made in memory.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;

use super::*;

fn message(body: &[u8]) -> Record<'_> {
    Record::Message {
        envelope: Envelope {
            id: 7,
            received_ms: 1_700_000_000_000,
            message_id: "<7@test>".into(),
            sender: "a@example.org".into(),
            binding: "default".into(),
            eight_bit: true,
            smtputf8: false,
            client: Some(Box::new(ClientRecord {
                addr: "192.0.2.1".into(),
                name: String::new(),
                helo: "client.example".into(),
                proto: "ESMTP".into(),
            })),
            entries: vec![EntryRecord {
                entry: 8,
                domain: "example.com".into(),
                recipients: vec!["b@example.com".into(), "c@example.com".into()],
                attempts: 2,
                next_ms: 1_700_000_600_000,
            }],
        },
        body,
        completes: vec![(3, "z@example.net".into())],
    }
}

fn records(body: &[u8]) -> Vec<Record<'_>> {
    vec![
        message(body),
        Record::Done {
            entry: 8,
            recipient: "b@example.com".into(),
        },
        Record::Attempted {
            entry: 8,
            attempts: 3,
            next_ms: 5,
        },
        Record::Gone { id: 7 },
    ]
}

/// The reader of segment `segment` under the tests' key; format 2
/// allowed when `format_2`.
fn owner(segment: u32, format_2: bool) -> Owner {
    Owner {
        segment,
        key: 0x0123_4567_89ab_cdef,
        format_2,
    }
}

#[test]
fn records_round_trip_and_damage_is_detected() {
    let body = b"Subject: x\r\n\r\nbody\r\n";
    let records = records(body);
    let mut buf = Vec::new();
    for r in &records {
        r.encode(&mut buf, owner(9, false));
    }
    let mut at = 0;
    for r in &records {
        let (got, len) = decode_in(&buf[at..], owner(9, false)).unwrap();
        assert_eq!(&got, r);
        at += len;
    }
    assert_eq!(at, buf.len());
    let (_, first) = decode_in(&buf, owner(9, false)).unwrap();
    assert!(
        decode_in(&buf, owner(8, false)).is_none(),
        "a record of another segment"
    );
    let other_key = Owner {
        key: 7,
        ..owner(9, false)
    };
    assert!(decode_in(&buf, other_key).is_none(), "another key");
    for cut in 0..first {
        assert!(decode(&buf[..cut]).is_none(), "cut at {cut}");
    }
    for flip in 0..first {
        let mut bad = buf.clone();
        bad[flip] ^= 0x10;
        assert!(decode(&bad).is_none(), "flip at {flip}");
    }
}

/// The frame of format 2 holding what `frame` (of format 3) holds.
fn format_2(frame: &[u8]) -> Vec<u8> {
    let payload = &frame[HEADER + 12..];
    let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
    let mut out = MAGIC_V2.to_vec();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc(&len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn records_of_format_2_are_read_only_where_an_earlier_postern_wrote_them() {
    let body = b"Subject: x\r\n\r\nbody\r\n";
    let mut buf = Vec::new();
    for r in records(body) {
        let mut one = Vec::new();
        r.encode(&mut one, owner(1, false));
        buf.extend(format_2(&one));
    }
    let found: Vec<_> = scan(&buf, owner(5, true)).collect();
    assert_eq!(found.len(), 4);
    for ((_, f), r) in found.iter().zip(records(body)) {
        assert!(matches!(f, Found::Record(got, _) if *got == r), "{f:?}");
    }
    assert_eq!(
        decode_in(&buf, owner(77, true)).unwrap().0,
        records(body)[0]
    );
    // Elsewhere they are nobody's: a sender could have written them.
    assert!(decode_in(&buf, owner(77, false)).is_none());
    let found: Vec<_> = scan(&buf, owner(5, false)).collect();
    assert!(
        matches!(found[..], [(0, Found::Damaged(n))] if n == buf.len()),
        "{found:?}"
    );
}

#[test]
fn records_of_an_earlier_use_of_the_file_are_old_and_frames_without_the_key_nobodys() {
    let body = b"Subject: x\r\n\r\nbody\r\n";
    let mut buf = Vec::new();
    for r in records(body) {
        r.encode(&mut buf, owner(3, false));
    }
    // A frame a sender made, in the body of an old message.
    let mut forged = Vec::new();
    Record::Gone { id: 7 }.encode(
        &mut forged,
        Owner {
            key: 99,
            ..owner(12, false)
        },
    );
    buf.extend_from_slice(&forged);
    let new_end = {
        let mut new = Vec::new();
        records(body)[1].encode(&mut new, owner(12, false));
        let end = new.len();
        // Segment 3's file reused as segment 12: its first record
        // overwritten in part.
        buf[..end].copy_from_slice(&new);
        end
    };
    let found: Vec<_> = scan(&buf, owner(12, false)).collect();
    assert!(matches!(found[0], (0, Found::Record(_, n)) if n == new_end));
    assert!(matches!(found[1], (at, Found::Damaged(_)) if at == new_end));
    let kinds: Vec<_> = found[2..]
        .iter()
        .map(|(_, f)| match f {
            Found::Record(..) => "record",
            Found::Old(_) => "old",
            Found::Damaged(_) => "damaged",
        })
        .collect();
    assert_eq!(kinds, ["old", "old", "old", "damaged"]);
}

#[test]
fn a_head_of_the_segments_own_frame_is_told_from_what_was_there_before() {
    let mut frame = Vec::new();
    records(b"body")[0].encode(&mut frame, owner(4, false));
    // A write cut short: any head of the frame that holds the key.
    for cut in HEADER + 12..frame.len() {
        assert!(looks_own(&frame[..cut], owner(4, false)), "cut at {cut}");
    }
    // The last record damaged in its marker, or in its number.
    let mut bad = frame.clone();
    bad[1] ^= 0xff;
    assert!(looks_own(&bad, owner(4, false)));
    let mut bad = frame.clone();
    bad[HEADER + 2] ^= 0xff;
    assert!(looks_own(&bad, owner(4, false)));
    // The piece of an earlier record that a new one cut, zeros, or a
    // sender's marker and number without the key.
    assert!(!looks_own(&frame[20..], owner(4, false)));
    assert!(!looks_own(&[0; 64], owner(4, false)));
    let mut forged = frame.clone();
    forged[HEADER + 4..HEADER + 12].copy_from_slice(&[0; 8]);
    assert!(!looks_own(&forged, owner(4, false)));
    assert_eq!(count_format_3(&forged), 0, "its checksum no longer holds");
    assert_eq!(count_format_3(&[&b"xx"[..], &frame, &frame].concat()), 2);
}

#[test]
fn a_segment_begun_under_another_key_is_told() {
    let mut frame = Vec::new();
    records(b"body")[0].encode(&mut frame, owner(4, false));
    assert!(!under_another_key(&frame, owner(4, false)));
    assert!(!under_another_key(&frame, owner(5, false)), "an old record");
    let other = Owner {
        key: 1,
        ..owner(4, false)
    };
    assert!(under_another_key(&frame, other));
    assert!(!under_another_key(&frame[1..], other), "not a whole frame");
    // A frame without the key is passed over before its checksum.
    assert!(!plausible(&frame, other));
    assert!(plausible(&frame, owner(9, false)));
}

#[test]
fn scanning_skips_a_damaged_record_and_keeps_the_rest() {
    let body = b"Subject: x\r\n\r\nbody\r\n";
    let mut buf = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..3 {
        for r in records(body) {
            starts.push(buf.len());
            r.encode(&mut buf, owner(1, false));
        }
    }
    // Damage the fifth record (the second message) in its payload.
    buf[starts[4] + HEADER + 20] ^= 0xff;
    let found: Vec<_> = scan(&buf, owner(1, false)).collect();
    let intact = found
        .iter()
        .filter(|(_, f)| matches!(f, Found::Record(..)))
        .count();
    assert_eq!(intact, 11);
    let damaged: Vec<_> = found
        .iter()
        .filter_map(|(at, f)| match f {
            Found::Damaged(n) => Some((*at, *n)),
            Found::Record(..) | Found::Old(_) => None,
        })
        .collect();
    assert_eq!(damaged, [(starts[4], starts[5] - starts[4])]);
    // A torn tail: the last record cut short.
    let cut = &buf[..buf.len() - 3];
    let (at, last) = scan(cut, owner(1, false)).last().unwrap();
    assert!(matches!(last, Found::Damaged(n) if at + n == cut.len()));
}

proptest! {
    #[test]
    fn no_bytes_make_decoding_or_scanning_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let mut total = 0;
        for (at, f) in scan(&bytes, owner(1, true)) {
            prop_assert_eq!(at, total);
            total += match f { Found::Record(_, n) | Found::Old(n) | Found::Damaged(n) => n };
        }
        prop_assert_eq!(total, bytes.len());
    }
}
