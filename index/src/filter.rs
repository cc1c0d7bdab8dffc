//! A filter of the keys one index segment holds, asked before its term dictionary.
//!
//! A service's query looks each of a probe's keys up in every segment, and most of those
//! look-ups find nothing: a person's records sit in one segment, so a key is in one or
//! two of them. A look-up in tantivy's term dictionary walks a finite-state transducer
//! far larger than the caches, a miss at each of several nodes, and at a million
//! records these walks were a quarter of a served query's CPU. The filter answers "not
//! here" from one word of memory for all but about one key in a hundred that is absent.
//!
//! It is a blocked Bloom filter: a key sets four bits in one 64-bit word. It never says
//! "not here" of a key the segment holds, so results are exactly as without it.

use tantivy::termdict::TermDictionary;

/// Bits of filter a key gets (before rounding the words up to a power of two).
const BITS_PER_KEY: usize = 16;

/// The keys of one segment (its term dictionary's terms), as a filter.
#[derive(Debug)]
pub(crate) struct KeyFilter {
    words: Box<[u64]>,
}

impl KeyFilter {
    /// Reads every term of a segment's dictionary (a stream through it: about a tenth
    /// of a second per million terms).
    pub(crate) fn of_terms(terms: &TermDictionary) -> std::io::Result<KeyFilter> {
        let mut filter = KeyFilter::with_room_for(terms.num_terms());
        let mut stream = terms.stream()?;
        while stream.advance() {
            filter.insert(stream.key());
        }
        Ok(filter)
    }

    fn with_room_for(n_keys: usize) -> KeyFilter {
        let n_words = (n_keys * BITS_PER_KEY).div_ceil(64).next_power_of_two();
        KeyFilter { words: vec![0; n_words].into_boxed_slice() }
    }

    fn insert(&mut self, term: &[u8]) {
        let (word, bits) = self.place(term);
        self.words[word] |= bits;
    }

    /// False only when the segment does not hold the term (`Term::serialized_value_bytes`,
    /// the bytes its dictionary files it under).
    pub(crate) fn may_contain(&self, term: &[u8]) -> bool {
        let (word, bits) = self.place(term);
        self.words[word] & bits == bits
    }

    /// The word a term's bits go in, and its four bits there.
    fn place(&self, term: &[u8]) -> (usize, u64) {
        let hash = mix(term);
        // (A power of two words: the mask takes the word from the hash's top bits, the
        // bits within it from the bottom 24.)
        let word = (hash >> 32) as usize & (self.words.len() - 1);
        let bits = (0..4).fold(0u64, |bits, i| bits | 1 << ((hash >> (6 * i)) & 63));
        (word, bits)
    }
}

/// A 64-bit hash of a term's bytes (eight for a `u64` key): FNV-1a, then a finaliser
/// that spreads every input bit over every output bit (blocking keys are hashes
/// already, but their top bytes are zero).
fn mix(term: &[u8]) -> u64 {
    let mut hash = term.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use quickcheck_macros::quickcheck;

    use super::*;

    /// Every key put in is found: the filter never hides a key.
    #[quickcheck]
    fn holds_every_key_it_was_given(keys: Vec<u64>) -> bool {
        let mut filter = KeyFilter::with_room_for(keys.len());
        for key in &keys {
            filter.insert(&key.to_be_bytes());
        }
        keys.iter().all(|key| filter.may_contain(&key.to_be_bytes()))
    }

    /// Keys never put in are mostly turned away: about one in a hundred gets through.
    #[test]
    fn turns_away_nearly_every_other_key() {
        let n = 100_000u64;
        let mut filter = KeyFilter::with_room_for(n as usize);
        for key in 0..n {
            filter.insert(&(key << 4 | 3).to_be_bytes());
        }
        let through = (n..2 * n).filter(|key| filter.may_contain(&(key << 4 | 3).to_be_bytes()));
        let rate = through.count() as f64 / n as f64;
        assert!(rate < 0.02, "false positive rate {rate}");
    }
}
