//! The nickname table: given names that refer to one formal name (Bob, Rob and Robert;
//! Peggy and Margaret) and spelling variants (Mohammed, Muhammad, Mohamed).

use std::collections::HashMap;

use super::fold;

/// The built-in table, `formal,nickname` pairs from `data/nicknames.csv`.
const BUILTIN: &str = include_str!("../../../data/nicknames.csv");

/// Nickname groups. A group is a formal name and its nicknames; two names are related
/// when they share a group. Relations do not chain across groups: `ally` is in both the
/// Alison and Alice groups, but that does not relate Alison to Alice.
#[derive(Clone, Debug, Default)]
pub struct Nicknames {
    /// Name to the sorted ids of the groups it belongs to.
    groups: HashMap<String, Vec<u32>>,
    /// Group id to its formal name.
    formal: Vec<String>,
    n_pairs: usize,
}

impl Nicknames {
    /// The built-in table.
    pub fn builtin() -> Nicknames {
        Nicknames::from_csv(BUILTIN)
    }

    /// Parses `formal,nickname` lines (a header line `formal,nickname` is skipped;
    /// names are folded).
    pub fn from_csv(text: &str) -> Nicknames {
        let mut table = Nicknames::default();
        let mut group_of_formal: HashMap<String, u32> = HashMap::new();
        for line in text.lines() {
            let Some((formal, nickname)) = line.split_once(',') else { continue };
            let (formal, nickname) = (fold(formal), fold(nickname));
            if formal.is_empty()
                || nickname.is_empty()
                || (formal == "formal" && nickname == "nickname")
            {
                continue;
            }
            let group = *group_of_formal.entry(formal.clone()).or_insert_with(|| {
                table.formal.push(formal.clone());
                (table.formal.len() - 1) as u32
            });
            for name in [formal, nickname] {
                let groups = table.groups.entry(name).or_default();
                if !groups.contains(&group) {
                    groups.push(group);
                    groups.sort_unstable();
                }
            }
            table.n_pairs += 1;
        }
        table
    }

    /// Number of pairs read.
    pub fn len(&self) -> usize {
        self.n_pairs
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.n_pairs == 0
    }

    /// The ids of the groups a folded name belongs to (empty when it is in none).
    pub fn groups(&self, name: &str) -> &[u32] {
        self.groups.get(name).map_or(&[], Vec::as_slice)
    }

    /// True when two folded given names are the same or share a nickname group.
    pub fn related(&self, a: &str, b: &str) -> bool {
        if a == b {
            return true;
        }
        let (groups_a, groups_b) = (self.groups(a), self.groups(b));
        groups_a.iter().any(|group| groups_b.binary_search(group).is_ok())
    }

    /// The formal name standing for a name in blocking keys: its own group's formal
    /// name when it is a formal name, else the alphabetically first formal name of its
    /// groups, else the name itself.
    pub fn canonical<'a>(&'a self, name: &'a str) -> &'a str {
        let groups = self.groups(name);
        if groups.iter().any(|&group| self.formal[group as usize] == name) {
            return name;
        }
        groups.iter().map(|&group| self.formal[group as usize].as_str()).min().unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_has_several_hundred_pairs() {
        assert!(Nicknames::builtin().len() >= 400);
    }

    #[test]
    fn related_names() {
        let table = Nicknames::builtin();
        for (a, b) in [
            ("bob", "robert"),
            ("rob", "bob"),
            ("bill", "william"),
            ("peggy", "margaret"),
            ("maggie", "peggy"),
            ("mohammed", "muhammad"),
            ("mohamed", "mohammad"),
            ("liz", "elizabeth"),
            ("kate", "katherine"),
            ("jim", "james"),
        ] {
            assert!(table.related(a, b), "{a} ~ {b}");
            assert!(table.related(b, a), "{b} ~ {a}");
        }
        assert!(!table.related("robert", "william"));
        assert!(!table.related("alison", "alexandra"), "no chaining through a shared nickname");
        assert!(table.related("zelda", "zelda"));
    }

    #[test]
    fn canonical_names() {
        let table = Nicknames::builtin();
        assert_eq!(table.canonical("bob"), "robert");
        assert_eq!(table.canonical("robert"), "robert");
        assert_eq!(table.canonical("peggy"), "margaret");
        assert_eq!(table.canonical("zelda"), "zelda");
    }

    #[test]
    fn parses_small_tables() {
        let table = Nicknames::from_csv("formal,nickname\nRobert,Bob\n\nbad line\nZoë,Zo\n");
        assert_eq!(table.len(), 2);
        assert!(table.related("zoe", "zo"));
    }
}
