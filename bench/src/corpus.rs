//! A generated text corpus with a realistic word distribution, for the search benchmark.
//!
//! Word frequencies follow Zipf's law (the `r`-th most frequent word appears in
//! proportion to `1 / r`), as in natural language. The 100 most frequent words are the
//! 100 most frequent English words; the rest of the 30,000-word vocabulary is made of
//! pronounceable syllable words, shorter ones more frequent. Every post is a pure
//! function of `(seed, index)`, so a benchmark can regenerate any post (to load it, or to
//! draw queries from it) without keeping the corpus in memory.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The most frequent English words, most frequent first.
const COMMON: [&str; 100] = [
    "the", "be", "to", "of", "and", "a", "in", "that", "have", "i", "it", "for", "not", "on",
    "with", "he", "as", "you", "do", "at", "this", "but", "his", "by", "from", "they", "we", "say",
    "her", "she", "or", "an", "will", "my", "one", "all", "would", "there", "their", "what", "so",
    "up", "out", "if", "about", "who", "get", "which", "go", "me", "when", "make", "can", "like",
    "time", "no", "just", "him", "know", "take", "people", "into", "year", "your", "good", "some",
    "could", "them", "see", "other", "than", "then", "now", "look", "only", "come", "its", "over",
    "think", "also", "back", "after", "use", "two", "how", "our", "work", "first", "well", "way",
    "even", "new", "want", "because", "any", "these", "give", "day", "most", "us",
];

/// Syllables of the generated words.
const SYLLABLES: [&str; 40] = [
    "ka", "lo", "mi", "ra", "ne", "to", "su", "vi", "da", "pe", "ri", "mo", "ta", "le", "nu", "sa",
    "ko", "fi", "ba", "de", "go", "hu", "ja", "ke", "li", "ma", "no", "pa", "qui", "ro", "se",
    "ti", "va", "we", "xo", "ya", "ze", "bri", "clo", "dra",
];

/// Words in the vocabulary.
pub const VOCABULARY: usize = 30_000;

/// Words at or past this rank are "content" words: rare enough to be worth searching.
pub const CONTENT_RANK: usize = 100;

/// One generated post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedPost {
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    pub public: bool,
}

/// The vocabulary and its frequency distribution.
pub struct Corpus {
    seed: u64,
    words: Vec<String>,
    ranks: std::collections::HashMap<String, usize>,
    /// Cumulative Zipf weights, for sampling by binary search.
    cumulative: Vec<f64>,
}

impl Corpus {
    /// The corpus of `seed`.
    pub fn new(seed: u64) -> Self {
        let words = vocabulary();
        let mut total = 0.0;
        let cumulative = (1..=words.len())
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        let ranks = words
            .iter()
            .enumerate()
            .map(|(r, w)| (w.clone(), r))
            .collect();
        Self {
            seed,
            words,
            ranks,
            cumulative,
        }
    }

    /// The word of a rank (0 = most frequent).
    pub fn word(&self, rank: usize) -> &str {
        &self.words[rank]
    }

    /// The rank of a vocabulary word.
    pub fn rank(&self, word: &str) -> Option<usize> {
        self.ranks.get(word).copied()
    }

    /// A word drawn by frequency.
    fn sample<'a>(&'a self, rng: &mut StdRng) -> &'a str {
        let total = *self.cumulative.last().expect("a vocabulary");
        let x = rng.random::<f64>() * total;
        let rank = self.cumulative.partition_point(|c| *c < x);
        &self.words[rank.min(self.words.len() - 1)]
    }

    /// `n` words drawn by frequency, joined by spaces.
    fn sentence(&self, rng: &mut StdRng, n: usize) -> String {
        let mut text = String::with_capacity(n * 7);
        for i in 0..n {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(self.sample(rng));
        }
        text
    }

    /// Post number `index`: a 3–8 word title, a 20–150 word body, up to three tags
    /// (content words), and one post in ten private.
    pub fn post(&self, index: u64) -> GeneratedPost {
        let mut rng = self.rng(index);
        let title_words = rng.random_range(3..=8);
        let title = self.sentence(&mut rng, title_words);
        let body_words = rng.random_range(20..=150);
        let body = self.sentence(&mut rng, body_words);
        let tag_count = rng.random_range(0..=3);
        let tags = (0..tag_count)
            .map(|_| self.words[rng.random_range(CONTENT_RANK..CONTENT_RANK + 300)].clone())
            .collect();
        GeneratedPost {
            title,
            body,
            tags,
            public: rng.random_range(0..10) != 0,
        }
    }

    /// A generator for drawing queries, independent of the posts' own.
    pub fn query_rng(&self, stream: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9).wrapping_add(stream) ^ 0x5EA2C4)
    }

    fn rng(&self, index: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed.wrapping_mul(1_000_003).wrapping_add(index))
    }
}

/// The 100 common words, then syllable words (two syllables before three), each once.
fn vocabulary() -> Vec<String> {
    let mut seen: std::collections::HashSet<String> =
        COMMON.iter().map(|w| (*w).to_owned()).collect();
    let mut words: Vec<String> = COMMON.iter().map(|w| (*w).to_owned()).collect();
    let n = SYLLABLES.len();
    // Walk each band in a scrambled order (a multiplier coprime with the band size), so
    // neighbouring ranks do not share their first syllable.
    for syllables in [2u32, 3] {
        let band = n.pow(syllables);
        for k in 0..band {
            if words.len() == VOCABULARY {
                return words;
            }
            let mut code = (k * 7_919) % band;
            let mut word = String::new();
            for _ in 0..syllables {
                word.push_str(SYLLABLES[code % n]);
                code /= n;
            }
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_is_distinct_and_full() {
        let words = vocabulary();
        assert_eq!(words.len(), VOCABULARY);
        let distinct: std::collections::HashSet<_> = words.iter().collect();
        assert_eq!(distinct.len(), VOCABULARY);
    }

    #[test]
    fn posts_are_a_function_of_seed_and_index() {
        let a = Corpus::new(7);
        let b = Corpus::new(7);
        assert_eq!(a.post(12_345), b.post(12_345));
        assert_ne!(a.post(1), a.post(2));
        assert_ne!(Corpus::new(8).post(1), a.post(1));
    }

    #[test]
    fn frequencies_follow_zipf() {
        let corpus = Corpus::new(1);
        let mut counts = std::collections::HashMap::<String, u64>::new();
        for i in 0..2_000 {
            let post = corpus.post(i);
            for word in post.body.split(' ') {
                *counts.entry(word.to_owned()).or_default() += 1;
            }
        }
        let of = |rank: usize| counts.get(corpus.word(rank)).copied().unwrap_or(0) as f64;
        // Rank 1 appears about twice as often as rank 2 and ten times as often as rank 10.
        let (first, second, tenth) = (of(0), of(1), of(9));
        assert!((1.6..2.5).contains(&(first / second)), "{first} / {second}");
        assert!((7.0..14.0).contains(&(first / tenth)), "{first} / {tenth}");
        assert!(
            counts.len() > 10_000,
            "a long tail: {} distinct words",
            counts.len()
        );
    }
}
