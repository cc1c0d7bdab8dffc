//! `mpi synth`: synthetic UK health and care records with ground truth.
//!
//! People live in households (families sharing a family name, address, postcode and
//! landline; couples with different surnames; care homes with many unrelated
//! residents). Some are twins (same birth date, family name, address and phone,
//! different given names) and some are Jr/Sr pairs (same given and family name and
//! address, born 20-40 years apart); half of those have no NHS number in any record,
//! as in real care data. Each person has one to four records across health and council
//! systems, with realistic noise: nicknames, typos, titles, initials, swapped names,
//! married names, moves, missing and invalid NHS numbers, mixed date formats, day/month
//! swaps and one-digit errors. Optionally ([`SynthConfig::real_world_forms`]) some values
//! are written as real UK files hold them. Output is deterministic for a seed on any machine.

use std::io::Write;

use mpi_matching::{BirthDate, Nicknames, fold, phonetic, within_one_edit};

use crate::rng::Rng;

/// What to generate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynthConfig {
    /// Number of people.
    pub people: usize,
    /// Seed.
    pub seed: u64,
    /// Adds a `hospital_number` column (see [`add_hospital_numbers`]). The other
    /// columns are the same with it or without it.
    pub hospital_numbers: bool,
    /// Writes some values in the forms real UK files hold them (see
    /// [`add_real_world_forms`]). The people, records and truth are the same with it
    /// or without it.
    pub real_world_forms: bool,
    /// Adds a `previous_family_name` column: a married person's former family name on
    /// some of the records made under the new one (see [`add_previous_family_names`]).
    /// The other columns are the same with it or without it.
    pub previous_names: bool,
}

/// One generated record with its true person. Empty strings are missing values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SynthRecord {
    pub source_system: String,
    pub local_id: String,
    pub person_id: String,
    /// `twin-N` or `jrsr-N` for both persons of a twin or Jr/Sr pair.
    pub hard_group: Option<String>,
    pub nhs_number: String,
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: String,
    pub sex: String,
    pub address_line1: String,
    pub address_line2: String,
    pub town: String,
    pub postcode: String,
    pub phone: String,
    pub email: String,
    /// Empty unless [`SynthConfig::hospital_numbers`].
    pub hospital_number: String,
    /// Empty unless [`SynthConfig::previous_names`].
    pub previous_family_name: String,
    /// The person's family name when this record was made was a former one (a record
    /// from before a marriage). Not written.
    pub under_former_name: bool,
}

const MALE: &[&str] = &[
    "Oliver",
    "George",
    "Harry",
    "Jack",
    "Jacob",
    "Noah",
    "Charlie",
    "Thomas",
    "Oscar",
    "William",
    "James",
    "Henry",
    "Leo",
    "Alfie",
    "Joshua",
    "Freddie",
    "Archie",
    "Ethan",
    "Isaac",
    "Alexander",
    "Joseph",
    "Edward",
    "Samuel",
    "Max",
    "Daniel",
    "Arthur",
    "Lucas",
    "Mohammed",
    "Logan",
    "Theo",
    "Harrison",
    "Benjamin",
    "Mason",
    "Sebastian",
    "Finley",
    "Adam",
    "Dylan",
    "Zachary",
    "Riley",
    "Teddy",
    "David",
    "Toby",
    "Jake",
    "Louie",
    "Elijah",
    "Reuben",
    "Robert",
    "John",
    "Michael",
    "Peter",
    "Paul",
    "Richard",
    "Christopher",
    "Anthony",
    "Stephen",
    "Mark",
    "Andrew",
    "Kevin",
    "Gary",
    "Ian",
    "Alan",
    "Keith",
    "Colin",
    "Brian",
    "Kenneth",
    "Raymond",
    "Ronald",
    "Dennis",
    "Derek",
    "Roger",
    "Graham",
    "Malcolm",
    "Trevor",
    "Nigel",
    "Philip",
    "Frank",
    "Albert",
    "Walter",
    "Frederick",
    "Ernest",
    "Stanley",
    "Harold",
    "Leonard",
    "Norman",
    "Geoffrey",
    "Gordon",
    "Patrick",
    "Sean",
    "Liam",
    "Connor",
    "Callum",
    "Rhys",
    "Gareth",
    "Dafydd",
    "Iain",
    "Hamish",
    "Ahmed",
    "Ali",
    "Hassan",
    "Yusuf",
    "Ibrahim",
    "Omar",
    "Bilal",
    "Imran",
    "Arjun",
    "Rahul",
    "Sanjay",
    "Harjit",
    "Gurpreet",
    "Manjit",
    "Rajesh",
    "Wei",
    "Jun",
    "Hao",
    "Lukasz",
    "Piotr",
    "Tomasz",
    "Krzysztof",
    "Pawel",
    "Kwame",
    "Kofi",
    "Chinedu",
    "Tunde",
    "Matthew",
    "Nicholas",
    "Timothy",
];

const FEMALE: &[&str] = &[
    "Olivia",
    "Amelia",
    "Isla",
    "Ava",
    "Mia",
    "Ivy",
    "Lily",
    "Isabella",
    "Rosie",
    "Sophia",
    "Grace",
    "Willow",
    "Freya",
    "Florence",
    "Emily",
    "Ella",
    "Poppy",
    "Evie",
    "Elsie",
    "Charlotte",
    "Evelyn",
    "Sienna",
    "Sofia",
    "Daisy",
    "Phoebe",
    "Sophie",
    "Alice",
    "Harper",
    "Matilda",
    "Ruby",
    "Emilia",
    "Maya",
    "Millie",
    "Isabelle",
    "Margaret",
    "Elizabeth",
    "Mary",
    "Patricia",
    "Susan",
    "Deborah",
    "Sarah",
    "Karen",
    "Julie",
    "Helen",
    "Jennifer",
    "Catherine",
    "Katherine",
    "Rebecca",
    "Victoria",
    "Joanne",
    "Nicola",
    "Claire",
    "Rachel",
    "Amanda",
    "Dorothy",
    "Doris",
    "Joan",
    "Joyce",
    "Jean",
    "Irene",
    "Edith",
    "Winifred",
    "Gladys",
    "Ethel",
    "Mildred",
    "Barbara",
    "Patricia",
    "Christine",
    "Valerie",
    "Sandra",
    "Janet",
    "Pauline",
    "Linda",
    "Brenda",
    "Carol",
    "Anne",
    "Siobhan",
    "Niamh",
    "Aoife",
    "Ciara",
    "Sian",
    "Bethan",
    "Catrin",
    "Fatima",
    "Aisha",
    "Ayesha",
    "Zainab",
    "Maryam",
    "Khadija",
    "Amina",
    "Priya",
    "Anjali",
    "Sunita",
    "Manpreet",
    "Harpreet",
    "Jaspreet",
    "Kiran",
    "Mei",
    "Xiu",
    "Li",
    "Agnieszka",
    "Katarzyna",
    "Magdalena",
    "Zoë",
    "Chloé",
    "Ngozi",
    "Abena",
    "Chidinma",
    "Jessica",
    "Hannah",
    "Lauren",
    "Megan",
    "Laura",
    "Samantha",
    "Stephanie",
    "Louise",
    "Teresa",
    "Frances",
];

const FAMILY: &[&str] = &[
    "Smith",
    "Jones",
    "Williams",
    "Taylor",
    "Brown",
    "Davies",
    "Evans",
    "Wilson",
    "Thomas",
    "Johnson",
    "Roberts",
    "Robinson",
    "Thompson",
    "Wright",
    "Walker",
    "White",
    "Edwards",
    "Hughes",
    "Green",
    "Hall",
    "Lewis",
    "Harris",
    "Clarke",
    "Patel",
    "Jackson",
    "Wood",
    "Turner",
    "Martin",
    "Cooper",
    "Hill",
    "Ward",
    "Morris",
    "Moore",
    "Clark",
    "Lee",
    "King",
    "Baker",
    "Harrison",
    "Morgan",
    "Allen",
    "James",
    "Scott",
    "Phillips",
    "Watson",
    "Davis",
    "Parker",
    "Price",
    "Bennett",
    "Young",
    "Griffiths",
    "Mitchell",
    "Kelly",
    "Cook",
    "Carter",
    "Richardson",
    "Bailey",
    "Collins",
    "Bell",
    "Shaw",
    "Murphy",
    "Miller",
    "Cox",
    "Richards",
    "Khan",
    "Marshall",
    "Anderson",
    "Simpson",
    "Ellis",
    "Adams",
    "Singh",
    "Begum",
    "Wilkinson",
    "Foster",
    "Chapman",
    "Powell",
    "Webb",
    "Rogers",
    "Gray",
    "Mason",
    "Ali",
    "Hunt",
    "Hussain",
    "Campbell",
    "Matthews",
    "Owen",
    "Palmer",
    "Holmes",
    "Mills",
    "Barnes",
    "Knight",
    "Lloyd",
    "Butler",
    "Russell",
    "Barker",
    "Fisher",
    "Stevens",
    "Jenkins",
    "Murray",
    "Dixon",
    "Harvey",
    "Graham",
    "Pearson",
    "Ahmed",
    "Fletcher",
    "Walsh",
    "Kaur",
    "Gibson",
    "Howard",
    "Andrews",
    "Stewart",
    "Elliott",
    "Reynolds",
    "Saunders",
    "Payne",
    "Fox",
    "Ford",
    "Pearce",
    "Day",
    "Brooks",
    "West",
    "Lawrence",
    "Cole",
    "Atkinson",
    "Bradley",
    "Spencer",
    "Gill",
    "Dawson",
    "Ball",
    "Burton",
    "O'Brien",
    "Watts",
    "Rose",
    "Booth",
    "Perry",
    "Ryan",
    "Grant",
    "Wells",
    "Armstrong",
    "Francis",
    "Rees",
    "Hayes",
    "Hart",
    "Hudson",
    "Newman",
    "Barrett",
    "Webster",
    "Hunter",
    "Gregory",
    "Carr",
    "Lowe",
    "Page",
    "Marsh",
    "Riley",
    "Dunn",
    "Woods",
    "Parsons",
    "Berry",
    "Stone",
    "Reid",
    "Holland",
    "Hawkins",
    "Harding",
    "Porter",
    "Robertson",
    "Newton",
    "Oliver",
    "Reed",
    "Kennedy",
    "Williamson",
    "Bird",
    "Gardner",
    "Shah",
    "Dean",
    "Lane",
    "Cooke",
    "Bates",
    "Henderson",
    "Parry",
    "Burgess",
    "Bishop",
    "Walton",
    "Burns",
    "Nicholson",
    "Shepherd",
    "Ross",
    "Cross",
    "Long",
    "Freeman",
    "Warren",
    "Nicholls",
    "Hamilton",
    "Byrne",
    "Sutton",
    "McDonald",
    "Yates",
    "Hodgson",
    "Robson",
    "Curtis",
    "Hopkins",
    "O'Neill",
    "Kemp",
    "MacDonald",
    "McKenzie",
    "Fraser",
    "Sharma",
    "Chaudhry",
    "Rahman",
    "Mahmood",
    "Iqbal",
    "Akhtar",
    "Mistry",
    "Chauhan",
    "Sandhu",
    "Dhillon",
    "Bains",
    "Wang",
    "Li",
    "Zhang",
    "Chen",
    "Liu",
    "Huang",
    "Nowak",
    "Kowalski",
    "Wiśniewski",
    "Wójcik",
    "Kowalczyk",
    "Lewandowski",
    "Okafor",
    "Mensah",
    "Adeyemi",
    "Boateng",
    "Smith-Jones",
    "Lloyd-Davies",
    "Fitzgerald",
    "Ó Súilleabháin",
    "Brontë",
    "Featherstonehaugh",
    "Ramsbottom",
    "Higginbottom",
    "Penhaligon",
    "Tregothnan",
    "Quiller",
];

/// Nickname and spelling-variant pairs used as record noise.
const NICKNAMES: &[(&str, &str)] = &[
    ("Robert", "Bob"),
    ("Robert", "Rob"),
    ("William", "Bill"),
    ("William", "Will"),
    ("Margaret", "Peggy"),
    ("Margaret", "Maggie"),
    ("Elizabeth", "Liz"),
    ("Elizabeth", "Beth"),
    ("Katherine", "Kate"),
    ("Catherine", "Cathy"),
    ("James", "Jim"),
    ("James", "Jimmy"),
    ("John", "Jack"),
    ("Richard", "Dick"),
    ("Richard", "Rick"),
    ("Edward", "Ted"),
    ("Edward", "Eddie"),
    ("Thomas", "Tom"),
    ("Anthony", "Tony"),
    ("Christopher", "Chris"),
    ("Nicholas", "Nick"),
    ("Michael", "Mike"),
    ("Michael", "Mick"),
    ("Daniel", "Dan"),
    ("David", "Dave"),
    ("Joseph", "Joe"),
    ("Samuel", "Sam"),
    ("Benjamin", "Ben"),
    ("Alexander", "Alex"),
    ("Frederick", "Fred"),
    ("Henry", "Harry"),
    ("Harold", "Harry"),
    ("Patricia", "Pat"),
    ("Patricia", "Trish"),
    ("Susan", "Sue"),
    ("Jennifer", "Jenny"),
    ("Rebecca", "Becky"),
    ("Victoria", "Vicky"),
    ("Deborah", "Debbie"),
    ("Dorothy", "Dot"),
    ("Mary", "Molly"),
    ("Sarah", "Sally"),
    ("Frances", "Fran"),
    ("Stephen", "Steve"),
    ("Matthew", "Matt"),
    ("Timothy", "Tim"),
    ("Kenneth", "Ken"),
    ("Ronald", "Ron"),
    ("Leonard", "Len"),
    ("Stanley", "Stan"),
    ("Mohammed", "Muhammad"),
    ("Mohammed", "Mohamed"),
    ("Mohammed", "Mohammad"),
    ("Yusuf", "Yousef"),
    ("Sean", "Shaun"),
    ("Iain", "Ian"),
    ("Philip", "Phil"),
    ("Geoffrey", "Geoff"),
    ("Winifred", "Winnie"),
    ("Florence", "Flo"),
    ("Isabella", "Bella"),
    ("Amelia", "Millie"),
    ("Charlotte", "Lottie"),
    ("Alice", "Ally"),
    ("Lukasz", "Luke"),
    ("Katarzyna", "Kasia"),
    ("Agnieszka", "Aga"),
    ("Piotr", "Peter"),
];

const STREETS: &[&str] = &[
    "High Street",
    "Station Road",
    "Main Street",
    "Park Road",
    "Church Road",
    "Church Street",
    "London Road",
    "Victoria Road",
    "Green Lane",
    "Manor Road",
    "Church Lane",
    "Park Avenue",
    "The Avenue",
    "Queens Road",
    "New Road",
    "Grange Road",
    "Kings Road",
    "Kingsway",
    "Windsor Road",
    "Highfield Road",
    "Mill Lane",
    "Alexander Road",
    "York Road",
    "St Johns Road",
    "Main Road",
    "Broadway",
    "King Street",
    "The Green",
    "Springfield Road",
    "George Street",
    "Park Lane",
    "Victoria Street",
    "Albert Road",
    "Queensway",
    "New Street",
    "Queen Street",
    "West Street",
    "North Street",
    "Manchester Road",
    "The Crescent",
    "Stanley Road",
    "Acacia Avenue",
    "Wallaby Place",
    "Chapel Lane",
    "Mill Road",
    "Richmond Road",
    "School Lane",
    "Oak Close",
    "Beech Grove",
    "Cedar Drive",
    "Elm Court",
    "Willow Gardens",
    "Ash Terrace",
    "Holly Crescent",
    "Rowan Way",
];

/// Towns with real outward codes.
const TOWNS: &[(&str, &[&str])] = &[
    ("Leeds", &["LS1", "LS6", "LS8", "LS11", "LS12", "LS17"]),
    ("Manchester", &["M1", "M14", "M20", "M8", "M40"]),
    ("Birmingham", &["B1", "B15", "B23", "B11", "B29"]),
    ("London", &["SW1A", "E1", "N1", "SE15", "NW10", "W2", "EC1A", "E17"]),
    ("Newcastle upon Tyne", &["NE1", "NE6", "NE4"]),
    ("Cardiff", &["CF10", "CF14", "CF24"]),
    ("Bristol", &["BS1", "BS7", "BS16"]),
    ("Sheffield", &["S1", "S10", "S6"]),
    ("Liverpool", &["L1", "L8", "L15"]),
    ("Bradford", &["BD1", "BD3", "BD9"]),
    ("Norwich", &["NR1", "NR2"]),
    ("Exeter", &["EX1", "EX4"]),
    ("Doncaster", &["DN1", "DN4"]),
    ("Leicester", &["LE1", "LE2", "LE5"]),
];

const CARE_HOMES: &[&str] = &[
    "Rosewood House",
    "Meadowbank Care Home",
    "The Willows",
    "Oakleigh Lodge",
    "Beechcroft Nursing Home",
];
const INWARD_LETTERS: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";
const SOURCES: &[&str] = &["gp", "acute", "community", "council_asc", "care_provider"];
const MONTH_NAMES: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

#[derive(Clone, Debug)]
struct Home {
    number: String,
    street: String,
    flat: Option<u32>,
    town: &'static str,
    postcode: String,
    landline: Option<String>,
    care_home: Option<&'static str>,
}

#[derive(Clone, Debug)]
struct Person {
    id: usize,
    given: Vec<String>,
    family: String,
    previous_family: Option<String>,
    male: bool,
    dob: (i64, u32, u32),
    nhs: Option<String>,
    home: usize,
    previous_home: Option<usize>,
    mobile: Option<String>,
    email: Option<String>,
    hard_group: Option<String>,
    suffix: Option<&'static str>,
    household: Vec<usize>,
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Six-digit numbers drawn without repeats, in an order fixed by the seed: an affine
/// permutation of 0..1,000,000 (`a * i + b`, with `a` prime to 10). Real NHS numbers and
/// phone numbers belong to one person (or home) each; numbers drawn at random would
/// collide (500,000 people share 76,000 numbers that way). After a million draws the
/// order repeats.
struct Distinct {
    a: u64,
    b: u64,
    next: u64,
}

impl Distinct {
    const SPACE: u64 = 1_000_000;

    fn new(rng: &mut Rng) -> Distinct {
        let a = loop {
            let a = rng.next() % Distinct::SPACE;
            if !a.is_multiple_of(2) && !a.is_multiple_of(5) {
                break a;
            }
        };
        Distinct { a, b: rng.next() % Distinct::SPACE, next: 0 }
    }

    fn draw(&mut self) -> u64 {
        let index = self.next % Distinct::SPACE;
        self.next += 1;
        (self.a * index + self.b) % Distinct::SPACE
    }
}

/// A valid NHS number in the 999 test range, distinct for the first 909,091 people
/// (the range holds no more: a tenth of 999 + six digits fail the check digit).
fn nhs_number(numbers: &mut Distinct) -> String {
    loop {
        let six = numbers.draw();
        let mut digits: Vec<u32> = vec![9, 9, 9];
        digits.extend((0..6).rev().map(|place| (six / 10u64.pow(place) % 10) as u32));
        let sum: u32 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            10 => continue,
            check => check,
        };
        digits.push(check);
        return digits.iter().map(|d| char::from(b'0' + *d as u8)).collect();
    }
}

struct Generator {
    rng: Rng,
    nhs_numbers: Distinct,
    mobiles: Distinct,
    landlines: Distinct,
    homes: Vec<Home>,
    persons: Vec<Person>,
    postcodes: Vec<(usize, String)>,
    next_twin: usize,
    next_jrsr: usize,
    nicknames: Nicknames,
}

impl Generator {
    fn new(seed: u64, people: usize) -> Generator {
        let mut rng = Rng(seed ^ 0xA076_1D64_78BD_642F);
        Generator {
            nhs_numbers: Distinct::new(&mut rng),
            mobiles: Distinct::new(&mut rng),
            landlines: Distinct::new(&mut rng),
            rng,
            homes: Vec::new(),
            persons: Vec::with_capacity(people + 40),
            postcodes: Vec::new(),
            next_twin: 0,
            next_jrsr: 0,
            nicknames: Nicknames::builtin(),
        }
    }

    fn birth_date(&mut self, year: i64) -> (i64, u32, u32) {
        let month = self.rng.range(1, 12) as u32;
        let day = self.rng.range(1, i64::from(days_in_month(year, month))) as u32;
        (year.min(2025), month, day)
    }

    fn postcode(&mut self, town: usize) -> String {
        // About fifteen households share each postcode, as in reality.
        if !self.postcodes.is_empty() && self.rng.chance(0.93) {
            let start = self.postcodes.len().saturating_sub(3);
            let candidates: Vec<&(usize, String)> =
                self.postcodes[start..].iter().filter(|(t, _)| *t == town).collect();
            if let Some(&(_, code)) = candidates.last() {
                return code.clone();
            }
        }
        let outward = *self.rng.pick(TOWNS[town].1);
        let letters: String = (0..2).map(|_| char::from(*self.rng.pick(INWARD_LETTERS))).collect();
        let code = format!("{outward} {}{letters}", self.rng.below(10));
        self.postcodes.push((town, code.clone()));
        code
    }

    fn phone(&mut self, mobile: bool) -> String {
        // 07700 900000-900999 and 01632 are Ofcom's ranges for fiction; the rest of
        // 07700 and 01632 gives each person or home a number of its own.
        if mobile {
            format!("07700 {:06}", self.mobiles.draw())
        } else {
            format!("01632 {:06}", self.landlines.draw())
        }
    }

    fn new_home(&mut self, care_home: Option<&'static str>) -> usize {
        let town = self.rng.below(TOWNS.len());
        let postcode = self.postcode(town);
        let home = Home {
            number: format!("{}", self.rng.range(1, 180)),
            street: (*self.rng.pick(STREETS)).to_owned(),
            flat: self.rng.chance(0.12).then(|| self.rng.range(1, 24) as u32),
            town: TOWNS[town].0,
            postcode,
            landline: (care_home.is_some() || self.rng.chance(0.5)).then(|| self.phone(false)),
            care_home,
        };
        self.homes.push(home);
        self.homes.len() - 1
    }

    fn given_names(&mut self, male: bool) -> Vec<String> {
        let list = if male { MALE } else { FEMALE };
        let mut names = vec![(*self.rng.pick_skewed(list)).to_owned()];
        if self.rng.chance(0.3) {
            let middle = (*self.rng.pick(list)).to_owned();
            if middle != names[0] {
                names.push(middle);
            }
        }
        names
    }

    fn person(&mut self, family: &str, male: bool, year: i64, home: usize) -> usize {
        let id = self.persons.len();
        let given = self.given_names(male);
        let dob = self.birth_date(year);
        let nhs = Some(nhs_number(&mut self.nhs_numbers));
        let mobile = (year < 2012 && self.rng.chance(0.45)).then(|| self.phone(true));
        let email = (year < 2010 && self.rng.chance(0.3)).then(|| {
            // The person's own address: a number after the name, as people pick when
            // theirs is taken (one per person, so no two people share one by chance).
            format!(
                "{}.{}{}@example.com",
                given[0].to_lowercase(),
                family.to_lowercase().replace(['\'', ' '], ""),
                id
            )
        });
        self.persons.push(Person {
            id,
            given,
            family: family.to_owned(),
            previous_family: None,
            male,
            dob,
            nhs,
            home,
            previous_home: None,
            mobile,
            email,
            hard_group: None,
            suffix: None,
            household: Vec::new(),
        });
        id
    }

    fn household(&mut self, target: usize) {
        let kind = self.rng.below(100);
        if kind < 1 {
            // A care home: unrelated elderly residents sharing an address and phone.
            let name = *self.rng.pick(CARE_HOMES);
            let home = self.new_home(Some(name));
            let residents = self.rng.range(8, 30) as usize;
            let members: Vec<usize> = (0..residents
                .min(target.saturating_sub(self.persons.len()).max(1)))
                .map(|_| {
                    let family = *self.rng.pick_skewed(FAMILY);
                    let male = self.rng.chance(0.4);
                    let year = self.rng.range(1925, 1950);
                    self.person(family, male, year, home)
                })
                .collect();
            self.link_household(&members);
            return;
        }
        let home = self.new_home(None);
        let family = (*self.rng.pick_skewed(FAMILY)).to_owned();
        let mut members = Vec::new();
        let parent_year = self.rng.range(1930, 2004);
        let first_male = self.rng.chance(0.5);
        let first = self.person(&family, first_male, parent_year, home);
        members.push(first);
        if kind < 30 {
            self.link_household(&members);
            return;
        }
        // A partner, sometimes with another family name.
        let partner_family = if self.rng.chance(0.25) {
            (*self.rng.pick_skewed(FAMILY)).to_owned()
        } else {
            family.clone()
        };
        let partner_year = parent_year + self.rng.range(-4, 4);
        let partner = self.person(&partner_family, !first_male, partner_year, home);
        self.distinct_first_name(partner, &members);
        members.push(partner);
        if !first_male && partner_family == family && self.rng.chance(0.3) {
            // She took this family name on marriage: older records carry her maiden name.
            self.persons[first].previous_family = Some((*self.rng.pick_skewed(FAMILY)).to_owned());
        }
        if kind < 55 || parent_year > 2000 {
            self.link_household(&members);
            return;
        }
        let n_children = self.rng.range(1, 4);
        let father = if first_male { first } else { partner };
        for _ in 0..n_children {
            let year = (parent_year + self.rng.range(20, 40)).min(2025);
            let male = self.rng.chance(0.5);
            let child = self.person(&family, male, year, home);
            self.distinct_first_name(child, &members);
            members.push(child);
            if self.rng.chance(0.02) {
                // Twins: same birth date, family and home; different given names.
                let twin_male = self.rng.chance(0.5);
                let twin = self.person(&family, twin_male, year, home);
                self.persons[twin].dob = self.persons[child].dob;
                self.distinct_first_name(twin, &members);
                let label = format!("twin-{}", self.next_twin);
                self.next_twin += 1;
                self.mark_hard_pair(child, twin, &label);
                members.push(twin);
            } else if male && self.persons[father].suffix.is_none() && self.rng.chance(0.03) {
                // Jr/Sr: the son (one in a family) carries his father's given name.
                let father_given = self.persons[father].given.clone();
                let father_family = self.persons[father].family.clone();
                self.persons[child].given = father_given;
                self.persons[child].family = father_family;
                self.persons[child].suffix = Some("Jr");
                self.persons[father].suffix = Some("Sr");
                let label = format!("jrsr-{}", self.next_jrsr);
                self.next_jrsr += 1;
                self.mark_hard_pair(father, child, &label);
            }
        }
        self.link_household(&members);
    }

    /// Draws the person's given names again until the first is plainly another name than
    /// every other member's: parents do not give two of their children one first name,
    /// or a name and its nickname or spelling variant (Henry and Harry, Aisha and Ayesha,
    /// Isabella and Isabelle), nor (but for a Jr, made on purpose) a child its parent's.
    /// Names that rhyme or look alike (Ella and Bella) they do give.
    fn distinct_first_name(&mut self, person: usize, members: &[usize]) {
        let male = self.persons[person].male;
        while members.iter().any(|&member| {
            one_name(
                &self.nicknames,
                &self.persons[member].given[0],
                &self.persons[person].given[0],
            )
        }) {
            self.persons[person].given = self.given_names(male);
        }
    }

    fn mark_hard_pair(&mut self, a: usize, b: usize, label: &str) {
        let without_nhs = self.rng.chance(0.5);
        for person in [a, b] {
            self.persons[person].hard_group = Some(label.to_owned());
            if without_nhs {
                self.persons[person].nhs = None;
            }
            // Relatives share the landline, not personal contacts.
            self.persons[person].email = None;
            self.persons[person].mobile = None;
        }
    }

    fn link_household(&mut self, members: &[usize]) {
        for &member in members {
            self.persons[member].household = members.to_vec();
            if self.persons[member].previous_family.is_some() || self.rng.chance(0.1) {
                let previous = self.new_home(None);
                self.persons[member].previous_home = Some(previous);
            }
        }
    }
}

/// True when two first names are one name to a parent choosing: the same, a name and its
/// nickname or a variant in the nickname table, or spellings one edit apart that sound
/// alike.
fn one_name(nicknames: &Nicknames, a: &str, b: &str) -> bool {
    let (a, b) = (fold(a), fold(b));
    nicknames.related(&a, &b) || (within_one_edit(&a, &b) && phonetic(&a) == phonetic(&b))
}

fn typo(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    if chars.len() < 3 {
        return text.to_owned();
    }
    let position = rng.range(1, chars.len() as i64 - 1) as usize;
    match rng.below(4) {
        0 => {
            chars.remove(position);
        }
        1 => chars.insert(position, chars[position - 1]),
        2 => chars[position] = char::from(b'a' + rng.below(26) as u8),
        _ => chars.swap(position - 1, position),
    }
    chars.into_iter().collect()
}

fn vary_case(rng: &mut Rng, text: &str) -> String {
    match rng.below(10) {
        0..=1 => text.to_uppercase(),
        2 => text.to_lowercase(),
        _ => text.to_owned(),
    }
}

fn format_date(rng: &mut Rng, source: &str, (year, month, day): (i64, u32, u32)) -> String {
    match source {
        "gp" => format!("{year:04}-{month:02}-{day:02}"),
        "acute" => format!("{day:02}/{month:02}/{year:04}"),
        "community" => format!("{year:04}{month:02}{day:02}"),
        _ => match rng.below(3) {
            0 if year >= 1930 => format!("{day}/{month}/{:02}", year % 100),
            1 => format!("{day:02}-{}-{year:04}", MONTH_NAMES[month as usize - 1]),
            _ => format!("{day}/{month}/{year:04}"),
        },
    }
}

fn record(
    generator: &mut Generator,
    person: &Person,
    source: &'static str,
    local_id: String,
    historic: bool,
) -> SynthRecord {
    let rng = &mut generator.rng;
    let health = matches!(source, "gp" | "acute" | "community");
    // NHS number: most health records, half of council and provider ones.
    let mut nhs = match &person.nhs {
        Some(number) if rng.chance(if health { 0.9 } else { 0.5 }) => number.clone(),
        _ => String::new(),
    };
    if !nhs.is_empty() {
        if rng.chance(0.003) {
            let position = rng.below(10);
            let mut digits: Vec<u8> = nhs.bytes().collect();
            digits[position] = b'0' + ((digits[position] - b'0' + 1 + rng.below(8) as u8) % 10);
            nhs = String::from_utf8(digits).unwrap_or_default();
        } else if rng.chance(0.001) {
            nhs = "0000000000".to_owned();
        } else if rng.chance(0.0005) {
            // A relative's number (the mother/newborn mistake).
            if let Some(other) = person.household.iter().find(|&&member| member != person.id)
                && let Some(number) = &generator.persons[*other].nhs
            {
                nhs = number.clone();
            }
        }
        if rng.chance(0.5) {
            nhs = format!("{} {} {}", &nhs[..3], &nhs[3..6], &nhs[6..]);
        }
    }
    let rng = &mut generator.rng;

    // Given names.
    let mut given = person.given.clone();
    if rng.chance(0.08)
        && let Some((_, nickname)) = NICKNAMES.iter().find(|(formal, _)| *formal == given[0])
    {
        given[0] = (*nickname).to_owned();
    }
    if given.len() > 1 && rng.chance(0.5) {
        given.truncate(1);
    }
    if rng.chance(0.05) {
        given[0] = typo(rng, &given[0]);
    }
    let mut given_text = given.join(" ");
    if rng.chance(0.02) {
        given_text = given[0].chars().next().map(String::from).unwrap_or_default();
    }
    let mut family = if historic {
        person.previous_family.clone().unwrap_or_else(|| person.family.clone())
    } else {
        person.family.clone()
    };
    if rng.chance(0.04) {
        family = typo(rng, &family);
    }
    if let Some(suffix) = person.suffix
        && rng.chance(0.35)
    {
        family = format!("{family} {suffix}");
    }
    if rng.chance(0.05) {
        let title = if person.male { "Mr" } else { *rng.pick(&["Mrs", "Ms", "Miss"]) };
        given_text = format!("{title} {given_text}");
    }
    let (mut given_text, mut family) = (vary_case(rng, &given_text), vary_case(rng, &family));
    if rng.chance(0.005) {
        std::mem::swap(&mut given_text, &mut family);
    }
    if rng.chance(0.01) {
        given_text.clear();
    }
    if rng.chance(0.003) {
        family = "UNKNOWN".to_owned();
    }

    // Date of birth.
    let (mut year, mut month, mut day) = person.dob;
    if rng.chance(0.01) && day <= 12 && day != month {
        std::mem::swap(&mut day, &mut month);
    } else if rng.chance(0.015) {
        match rng.below(3) {
            0 => day = if day < 9 { day + 1 } else { day - 1 },
            1 => year += if rng.chance(0.5) { 10 } else { -10 },
            _ => year += if rng.chance(0.5) { 1 } else { -1 },
        }
        day = day.min(days_in_month(year, month));
    }
    let date_of_birth = if rng.chance(0.02) {
        String::new()
    } else if rng.chance(0.002) {
        "1900-01-01".to_owned()
    } else {
        format_date(rng, source, (year.min(2025), month, day))
    };
    let sex = if rng.chance(0.05) {
        String::new()
    } else {
        let codes: [&str; 2] = match source {
            "gp" | "community" => ["male", "female"],
            "acute" => ["1", "2"],
            _ => ["M", "F"],
        };
        codes[usize::from(!person.male)].to_owned()
    };

    // Address at the time of this record.
    let home_index =
        if historic { person.previous_home.unwrap_or(person.home) } else { person.home };
    let home = generator.homes[home_index].clone();
    let rng = &mut generator.rng;
    let abbreviate = |rng: &mut Rng, street: &str| {
        if rng.chance(0.4) {
            street
                .replace("Road", "Rd")
                .replace("Street", "St")
                .replace("Avenue", "Ave")
                .replace("Lane", "Ln")
        } else {
            street.to_owned()
        }
    };
    let street = abbreviate(rng, &home.street);
    let (address_line1, address_line2) = match (home.care_home, home.flat) {
        (Some(name), _) => (name.to_owned(), format!("{} {street}", home.number)),
        (None, Some(flat)) => {
            if rng.chance(0.5) {
                (format!("Flat {flat}, {} {street}", home.number), String::new())
            } else {
                (format!("Flat {flat}"), format!("{} {street}", home.number))
            }
        }
        (None, None) => (format!("{} {street}", home.number), String::new()),
    };
    let missing_address = rng.chance(if health { 0.05 } else { 0.02 });
    let postcode = if missing_address || rng.chance(0.02) {
        String::new()
    } else if rng.chance(0.3) {
        home.postcode.to_lowercase().replace(' ', "")
    } else {
        home.postcode.clone()
    };
    let (address_line1, address_line2, town) = if missing_address {
        (String::new(), String::new(), String::new())
    } else {
        (vary_case(rng, &address_line1), address_line2, home.town.to_owned())
    };

    // Contacts: a personal mobile or the household landline; email sometimes.
    let phone = match (&person.mobile, &home.landline) {
        (Some(mobile), _) if rng.chance(0.6) => mobile.clone(),
        (_, Some(landline)) if rng.chance(0.6) => landline.clone(),
        _ => String::new(),
    };
    let phone =
        if !phone.is_empty() && rng.chance(0.3) { format!("+44 {}", &phone[1..]) } else { phone };
    let email = match &person.email {
        Some(email) if rng.chance(0.5) => {
            if rng.chance(0.2) {
                email.to_uppercase()
            } else {
                email.clone()
            }
        }
        _ => String::new(),
    };
    SynthRecord {
        source_system: source.to_owned(),
        local_id,
        person_id: format!("P{:07}", person.id),
        hard_group: person.hard_group.clone(),
        nhs_number: nhs,
        given_name: given_text,
        family_name: family,
        date_of_birth,
        sex,
        address_line1,
        address_line2,
        town,
        postcode,
        phone,
        email,
        hospital_number: String::new(),
        previous_family_name: String::new(),
        under_former_name: historic && person.previous_family.is_some(),
    }
}

/// Generates records for `config.people` people (about two records each), in a
/// shuffled order so that no file is sorted by person.
pub fn generate(config: &SynthConfig) -> Vec<SynthRecord> {
    let mut generator = Generator::new(config.seed, config.people);
    while generator.persons.len() < config.people {
        generator.household(config.people);
    }
    generator.persons.truncate(config.people);
    // A twin or Jr/Sr whose partner fell beyond the cut is no longer a pair.
    let mut group_sizes: std::collections::HashMap<String, usize> =
        std::collections::HashMap::new();
    for person in &generator.persons {
        if let Some(group) = &person.hard_group {
            *group_sizes.entry(group.clone()).or_default() += 1;
        }
    }
    for person in &mut generator.persons {
        if person.hard_group.as_ref().is_some_and(|group| group_sizes[group] < 2) {
            person.hard_group = None;
        }
    }
    let persons = std::mem::take(&mut generator.persons);
    generator.persons = persons.clone();
    let mut counters = [0usize; 5];
    let mut records = Vec::with_capacity(config.people * 2);
    for person in &persons {
        let n_records = match generator.rng.below(100) {
            0..=34 => 1,
            35..=69 => 2,
            70..=89 => 3,
            _ => 4,
        };
        for index in 0..n_records {
            let source_index = generator.rng.below(SOURCES.len());
            let source = SOURCES[source_index];
            counters[source_index] += 1;
            let number = counters[source_index];
            let local_id = match source {
                "gp" => format!("GP{number:07}"),
                "acute" => format!("RX{number:08}"),
                "community" => format!("CM-{number}"),
                "council_asc" => format!("ASC-{number:06}"),
                _ => format!("CP{number}"),
            };
            // The first record of someone who moved or married predates the change.
            let historic = index == 0
                && n_records > 1
                && (person.previous_home.is_some() || person.previous_family.is_some());
            records.push(record(&mut generator, person, source, local_id, historic));
        }
    }
    // Fisher-Yates, deterministic.
    for i in (1..records.len()).rev() {
        let j = generator.rng.below(i + 1);
        records.swap(i, j);
    }
    if config.hospital_numbers {
        add_hospital_numbers(&mut records, config.seed);
    }
    if config.real_world_forms {
        add_real_world_forms(&mut records, config.seed);
    }
    if config.previous_names {
        add_previous_family_names(&mut records, &persons, config.seed);
    }
    records
}

/// Share of a married person's health records, made under the new family name, that
/// carry the former one (the NHS's own systems keep previous names).
const PREVIOUS_NAME_HEALTH_SHARE: f64 = 0.5;
/// The same share of council and provider records.
const PREVIOUS_NAME_CARE_SHARE: f64 = 0.25;

/// Writes a married person's former family name in `previous_family_name` on half the
/// health records and a quarter of the council and provider records made under the new
/// name (none on the records made before the marriage, which carry the former name
/// itself). Draws from its own generator, so the other columns do not change.
fn add_previous_family_names(records: &mut [SynthRecord], persons: &[Person], seed: u64) {
    let mut rng = Rng(seed ^ 0x5052_4556_4E41_4D45);
    for record in records {
        let Some(former) = record
            .person_id
            .strip_prefix('P')
            .and_then(|id| id.parse::<usize>().ok())
            .and_then(|id| persons.get(id))
            .and_then(|person| person.previous_family.as_ref())
        else {
            continue;
        };
        let health = matches!(record.source_system.as_str(), "gp" | "acute" | "community");
        let share = if health { PREVIOUS_NAME_HEALTH_SHARE } else { PREVIOUS_NAME_CARE_SHARE };
        if !record.under_former_name && rng.chance(share) {
            record.previous_family_name = former.clone();
        }
    }
}

/// Rewrites values into forms seen in real UK health and care files, each on a share of
/// the records where it can apply, drawing from its own generator so that nothing else
/// changes:
/// - a possessive street name written with its apostrophe (`Queen's Road`), on half;
/// - a council or provider birth date exported from a spreadsheet with a time of day
///   (`12/07/1980 00:00`), on a fifth of those written day/month/year;
/// - a birth date written out with an ordinal (`12th July 1980`), on a fifth of those
///   written with a month's name;
/// - an NHS number with its label (`NHS No: 943 476 5919`), on 2%;
/// - a note in brackets after the family name (`SMITH (DECEASED)`), on 0.5%, and a
///   generational suffix in brackets (`Smith (Jnr)`), on half of those written;
/// - a title alone where the given name should be (`Mr`, `Mrs`), on 0.3%;
/// - a family name's apostrophe written as a space or left out (`O Brien`, `OBrien`),
///   or its hyphen as a space (`Smith Jones`), on 30% of those names;
/// - a council or provider birth date as a spreadsheet's serial day number (`29414` for
///   12 July 1980), on 3% of those born after May 1927;
/// - a second phone number after the first (`07700 900123 / 07700 912345`), on 2%, a
///   landline's extension (`01632 960123 ext 21`), on 2%, and a label before the number
///   or a note after it (`Tel: ...`, `... (mobile)`), on 3%;
/// - in a postcode, the letter O or I typed for the digit 0 or 1 where only a digit can
///   stand (`LS1 OAB`), on 1%;
/// - no fixed abode: the pseudo-postcode `ZZ99 3VZ` and the address `No fixed abode`, on
///   0.3%. With the title alone, the forms that take information away: the address, or
///   the given name, was never given;
/// - a number column as a spreadsheet or a data frame exports it: an NHS number as
///   `9434765919.0`, on 1% of those written without spaces, and a phone number without
///   its leading zero (`7700900123`), on 1%, half of them with `.0` after it;
/// - the postcode written at the end of the town's line (`Leeds LS1 4AB`), its own
///   column left empty, on 1%, as a file with one address column holds it.
pub fn add_real_world_forms(records: &mut [SynthRecord], seed: u64) {
    let mut rng = Rng(seed ^ 0x5245_414C_464F_524D);
    // The spreadsheet's numbers draw from a stream of their own, so that the forms
    // above fall on the same records as before they were added.
    let mut numbers_rng = Rng(seed ^ 0x5350_5245_4144_5348);
    let mut postcode_rng = Rng(seed ^ 0x504F_5354_434F_4445);
    // A fixed "today", for the same output on any day: the generator's births end in 2025.
    let today = BirthDate { year: 2025, month: 12, day: 31 };
    for record in records {
        // Every draw is made for every record, so one form's share moves no other's.
        let possessive = rng.chance(0.5);
        let spreadsheet = rng.chance(0.2);
        let ordinal = rng.chance(0.2);
        let nhs_label = rng.chance(0.02);
        let note = rng.chance(0.005);
        let second_phone = rng.chance(0.02);
        let extension = rng.chance(0.02);
        let postcode_letter = rng.chance(0.01);
        let no_fixed_abode = rng.chance(0.003);
        let serial = rng.chance(0.03);
        let joined_apart = rng.chance(0.3);
        let run_together = rng.chance(0.5);
        let phone_label = rng.chance(0.03);
        let bracketed_suffix = rng.chance(0.5);
        let title_alone = rng.chance(0.003);
        let (second_number, extension_number) = (rng.range(0, 99_999), rng.range(2, 99));
        let label = *rng.pick(&["Tel: ", "Mob ", "Home: ", " (mobile)", " (home)", " daughter"]);

        if possessive {
            record.address_line1 = with_apostrophes(&record.address_line1);
            record.address_line2 = with_apostrophes(&record.address_line2);
        }
        let council = matches!(record.source_system.as_str(), "council_asc" | "care_provider");
        if spreadsheet && council && day_month_year(&record.date_of_birth) {
            record.date_of_birth.push_str(" 00:00");
        }
        if ordinal && let Some(date) = with_ordinal(&record.date_of_birth) {
            record.date_of_birth = date;
        }
        if serial
            && council
            && let Ok(date) = mpi_matching::normalize_birth_date(&record.date_of_birth, today)
        {
            let day = date.day_number() - BirthDate { year: 1899, month: 12, day: 30 }.day_number();
            if (10_000..100_000).contains(&day) {
                record.date_of_birth = day.to_string();
            }
        }
        if nhs_label && !record.nhs_number.is_empty() {
            record.nhs_number = format!("NHS No: {}", record.nhs_number);
        }
        if joined_apart && record.family_name.contains(['\'', '-']) {
            let apostrophe = if run_together { "" } else { " " };
            record.family_name = record.family_name.replace('\'', apostrophe).replace('-', " ");
        }
        if bracketed_suffix {
            for (written, bracketed) in [(" Jr", " (Jnr)"), (" Sr", " (Snr)")] {
                if let Some(family) = record.family_name.strip_suffix(written) {
                    record.family_name = format!("{family}{bracketed}");
                }
            }
        }
        if title_alone && !record.given_name.is_empty() {
            record.given_name = if record.sex == "female" || record.sex == "F" || record.sex == "2"
            {
                "Mrs".to_owned()
            } else {
                "Mr".to_owned()
            };
        }
        if note && !record.family_name.is_empty() {
            record.family_name.push_str(" (DECEASED)");
        }
        if second_phone && !record.phone.is_empty() {
            record.phone = format!("{} / 07700 9{second_number:05}", record.phone);
        } else if extension && record.phone.replace(' ', "").contains("1632") {
            record.phone = format!("{} ext {extension_number}", record.phone);
        } else if phone_label && !record.phone.is_empty() {
            record.phone = if label.starts_with(' ') {
                format!("{}{label}", record.phone)
            } else {
                format!("{label}{}", record.phone)
            };
        }
        if postcode_letter {
            record.postcode = letter_for_digit(&record.postcode);
        }
        if no_fixed_abode {
            record.address_line1 = "No fixed abode".to_owned();
            record.address_line2.clear();
            record.town.clear();
            record.postcode = "ZZ99 3VZ".to_owned();
        }
        let (nhs_as_number, phone_as_number, with_point) =
            (numbers_rng.chance(0.01), numbers_rng.chance(0.01), numbers_rng.chance(0.5));
        if nhs_as_number
            && record.nhs_number.len() == 10
            && record.nhs_number.bytes().all(|b| b.is_ascii_digit())
        {
            record.nhs_number.push_str(".0");
        }
        let digits: String = record.phone.chars().filter(|c| !c.is_whitespace()).collect();
        if phone_as_number
            && digits.len() == 11
            && digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
        {
            record.phone = format!("{}{}", &digits[1..], if with_point { ".0" } else { "" });
        }
        if postcode_rng.chance(0.01)
            && !record.town.is_empty()
            && mpi_matching::normalize_postcode(&record.postcode).is_ok_and(|code| code.is_uk)
        {
            record.town = format!("{} {}", record.town, record.postcode);
            record.postcode.clear();
        }
    }
}

/// `Queens Road` as `Queen's Road` (any case), for the possessive street names the
/// generator uses; `Queensway` is left alone.
fn with_apostrophes(line: &str) -> String {
    let lower = line.to_lowercase();
    if lower.len() != line.len() {
        return line.to_owned();
    }
    let mut out = line.to_owned();
    for word in ["queens", "kings", "johns"] {
        let mut from = 0;
        while let Some(at) = lower[from..].find(word).map(|at| at + from) {
            let end = at + word.len();
            let starts = at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphabetic();
            let ends = end == lower.len() || !lower.as_bytes()[end].is_ascii_alphabetic();
            if starts && ends {
                // Offsets in `out` run one byte ahead per apostrophe already put in.
                let shift = out.len() - line.len();
                out.insert(end - 1 + shift, '\'');
            }
            from = end;
        }
    }
    out
}

/// Whether a date is written day/month/year with a four-digit year (`12/7/1980`).
fn day_month_year(date: &str) -> bool {
    let parts: Vec<&str> = date.split('/').collect();
    parts.len() == 3
        && parts[2].len() == 4
        && parts.iter().all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// `05-Aug-1931` as `5th August 1931`; `None` for a date not written that way.
fn with_ordinal(date: &str) -> Option<String> {
    let mut parts = date.split('-');
    let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?);
    let day: u32 = day.parse().ok()?;
    let month = MONTH_NAMES.iter().position(|name| *name == month)?;
    let suffix = match day {
        1 | 21 | 31 => "st",
        2 | 22 => "nd",
        3 | 23 => "rd",
        _ => "th",
    };
    Some(format!("{day}{suffix} {} {year}", BirthDate::month_name(month as u8 + 1)?))
}

/// A postcode with O or I typed for the first 0 or 1 of its inward code, or failing
/// that the last character of its outward code; unchanged if it has neither.
fn letter_for_digit(postcode: &str) -> String {
    let letter = |digit: u8| match digit {
        b'0' => Some(b'O'),
        b'1' => Some(b'I'),
        _ => None,
    };
    let mut bytes = postcode.as_bytes().to_vec();
    let compact: Vec<usize> =
        (0..bytes.len()).filter(|&index| !bytes[index].is_ascii_whitespace()).collect();
    if compact.len() < 5 {
        return postcode.to_owned();
    }
    let inward_first = compact[compact.len() - 3];
    let outward_last = compact[compact.len() - 4];
    for at in [inward_first, outward_last] {
        if let Some(typed) = letter(bytes[at]) {
            bytes[at] = typed;
            return String::from_utf8(bytes).unwrap_or_else(|_| postcode.to_owned());
        }
    }
    postcode.to_owned()
}

/// Share of records that carry the person's hospital number.
const HOSPITAL_NUMBER_SHARE: f64 = 0.6;
/// Share of those typed with one digit wrong.
const HOSPITAL_NUMBER_TYPOS: f64 = 0.01;

/// Gives each person a hospital number, handed out in sequence in the order people
/// first appear in the file (`H1000000`, `H1000001`, ...), as a hospital's numbers are:
/// neighbours differ in one digit. Six records in ten carry it, and one in a hundred of
/// those has a digit typed wrong. Draws from its own generator, so the other columns
/// do not change.
fn add_hospital_numbers(records: &mut [SynthRecord], seed: u64) {
    let mut rng = Rng(seed ^ 0x4D52_4E5F_4E55_4D42);
    let mut numbers: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for record in records {
        let next = numbers.len();
        let number = *numbers.entry(record.person_id.clone()).or_insert(next);
        if !rng.chance(HOSPITAL_NUMBER_SHARE) {
            continue;
        }
        let mut digits = format!("{:07}", 1_000_000 + number).into_bytes();
        if rng.chance(HOSPITAL_NUMBER_TYPOS) {
            let at = rng.below(digits.len());
            let other = (digits[at] - b'0' + 1 + rng.below(9) as u8) % 10;
            digits[at] = b'0' + other;
        }
        record.hospital_number = format!("H{}", String::from_utf8(digits).expect("ASCII digits"));
    }
}

/// Writes records as CSV with the canonical columns, and `hospital_number` and
/// `previous_family_name` after them when any record has one.
///
/// # Errors
/// When writing fails.
pub fn write_records<W: Write>(records: &[SynthRecord], out: W) -> std::io::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    let hospital_numbers = records.iter().any(|r| !r.hospital_number.is_empty());
    let previous_names = records.iter().any(|r| !r.previous_family_name.is_empty());
    let mut header = vec![
        "source_system",
        "local_id",
        "nhs_number",
        "given_name",
        "family_name",
        "date_of_birth",
        "sex",
        "address_line1",
        "address_line2",
        "town",
        "postcode",
        "phone",
        "email",
    ];
    if hospital_numbers {
        header.push("hospital_number");
    }
    if previous_names {
        header.push("previous_family_name");
    }
    writer.write_record(&header)?;
    for r in records {
        let mut row = vec![
            &r.source_system,
            &r.local_id,
            &r.nhs_number,
            &r.given_name,
            &r.family_name,
            &r.date_of_birth,
            &r.sex,
            &r.address_line1,
            &r.address_line2,
            &r.town,
            &r.postcode,
            &r.phone,
            &r.email,
        ];
        if hospital_numbers {
            row.push(&r.hospital_number);
        }
        if previous_names {
            row.push(&r.previous_family_name);
        }
        writer.write_record(&row)?;
    }
    writer.flush()
}

/// Writes the truth file: `source_system, local_id, person_id, hard_group`.
///
/// # Errors
/// When writing fails.
pub fn write_truth<W: Write>(records: &[SynthRecord], out: W) -> std::io::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(["source_system", "local_id", "person_id", "hard_group"])?;
    for r in records {
        writer.write_record([
            &r.source_system,
            &r.local_id,
            &r.person_id,
            r.hard_group.as_deref().unwrap_or(""),
        ])?;
    }
    writer.flush()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn valid_nhs(number: &str) -> bool {
        let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
        if digits.len() != 10 {
            return false;
        }
        let sum: u32 = digits[..9].iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            10 => return false,
            check => check,
        };
        digits[9] == check
    }

    fn demographics(record: &SynthRecord) -> mpi_matching::Demographics {
        let values = [
            &record.nhs_number,
            &record.given_name,
            &record.family_name,
            &record.date_of_birth,
            &record.sex,
            &record.address_line1,
            &record.address_line2,
            &record.town,
            &record.postcode,
            &record.phone,
            &record.email,
        ];
        mpi_matching::Demographics::from_values(
            values.map(|value| Some(value.clone()).filter(|value| !value.is_empty())),
            Vec::new(),
        )
    }

    #[test]
    fn real_world_forms_normalise_to_the_plain_values_but_what_they_take_away() {
        let config = SynthConfig { people: 20_000, seed: 5, ..SynthConfig::default() };
        let plain = generate(&config);
        let real = generate(&SynthConfig { real_world_forms: true, ..config });
        assert_eq!(plain.len(), real.len());
        let normalizer = mpi_matching::Normalizer::new(crate::normalize_options(false));
        // How many records each form rewrote, by a mark it leaves in the raw value.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (plain, real) in plain.iter().zip(&real) {
            assert_eq!(
                (&plain.source_system, &plain.local_id, &plain.person_id, &plain.hard_group),
                (&real.source_system, &real.local_id, &real.person_id, &real.hard_group)
            );
            let marks = [
                (
                    "apostrophe",
                    real.address_line1.contains('\'') || real.address_line2.contains('\''),
                ),
                ("time of day", real.date_of_birth.ends_with(" 00:00")),
                (
                    "ordinal",
                    real.date_of_birth.contains("th ") || real.date_of_birth.contains("st "),
                ),
                ("NHS label", real.nhs_number.starts_with("NHS No: ")),
                ("note", real.family_name.ends_with("(DECEASED)")),
                (
                    "bracketed suffix",
                    real.family_name.contains("(Jnr)") || real.family_name.contains("(Snr)"),
                ),
                ("title alone", real.given_name == "Mr" || real.given_name == "Mrs"),
                (
                    "family name apart",
                    plain.family_name.contains(['\'', '-'])
                        && !real.family_name.contains(['\'', '-']),
                ),
                ("two phones", real.phone.contains(" / ")),
                ("extension", real.phone.contains(" ext ")),
                (
                    "phone label",
                    real.phone.contains(':')
                        || real.phone.ends_with(')')
                        || real.phone.ends_with("daughter")
                        || real.phone.starts_with("Mob "),
                ),
                (
                    "serial date",
                    real.date_of_birth.len() == 5
                        && real.date_of_birth.bytes().all(|b| b.is_ascii_digit()),
                ),
                (
                    "letter for digit",
                    real.postcode != plain.postcode && real.postcode != "ZZ99 3VZ",
                ),
                ("no fixed abode", real.postcode == "ZZ99 3VZ"),
                ("NHS number as a number", real.nhs_number.ends_with(".0")),
                ("postcode in the address", real.postcode.is_empty() && !plain.postcode.is_empty()),
                (
                    "phone as a number",
                    !real.phone.is_empty()
                        && !real.phone.starts_with('0')
                        && real.phone.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
                ),
            ];
            for (form, marked) in marks {
                *seen.entry(form).or_default() += usize::from(marked);
            }
            let (mut expected, _) = normalizer.normalize(&demographics(plain));
            let (mut got, issues) = normalizer.normalize(&demographics(real));
            // A family name written apart or run together normalises to other text, and
            // compares as the same name: the same tokens.
            let tokens =
                |family: &Option<Box<str>>| family.as_deref().map(mpi_matching::family_tokens);
            assert_eq!(tokens(&got.family_name), tokens(&expected.family_name), "{real:?}");
            got.family_name = None;
            expected.family_name = None;
            if real.given_name == "Mr" || real.given_name == "Mrs" {
                // A title alone says no given name: the one form but no fixed abode that
                // takes information away. It says a sex, taken where the record has none.
                expected.given_names = Box::new([]);
                let said = if real.given_name == "Mr" {
                    mpi_matching::Sex::Male
                } else {
                    mpi_matching::Sex::Female
                };
                expected.sex = expected.sex.or(Some(said));
            }
            if real.postcode == "ZZ99 3VZ" {
                expected.postcode = None;
                expected.address = None;
                let placeholders: Vec<_> = issues
                    .iter()
                    .filter(|issue| issue.kind == mpi_matching::IssueKind::Placeholder)
                    .map(|issue| issue.field)
                    .collect();
                assert!(placeholders.contains(&mpi_matching::Field::Postcode), "{issues:?}");
                assert!(placeholders.contains(&mpi_matching::Field::AddressLine1), "{issues:?}");
            }
            assert_eq!(got, expected, "{real:?} against {plain:?}");
        }
        for (form, count) in &seen {
            assert!(*count >= 10, "{form} written on only {count} records: {seen:?}");
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = generate(&SynthConfig { people: 500, seed: 1, ..SynthConfig::default() });
        let b = generate(&SynthConfig { people: 500, seed: 1, ..SynthConfig::default() });
        let c = generate(&SynthConfig { people: 500, seed: 2, ..SynthConfig::default() });
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn shape_of_the_data() {
        let people = 20_000;
        let records = generate(&SynthConfig { people, seed: 7, ..SynthConfig::default() });
        let ratio = records.len() as f64 / people as f64;
        assert!((1.8..2.4).contains(&ratio), "records per person {ratio}");
        let persons: std::collections::HashSet<&str> =
            records.iter().map(|r| r.person_id.as_str()).collect();
        assert_eq!(persons.len(), people);
        let with_nhs: Vec<&SynthRecord> =
            records.iter().filter(|r| !r.nhs_number.is_empty()).collect();
        let valid = with_nhs.iter().filter(|r| valid_nhs(&r.nhs_number)).count();
        assert!(valid as f64 > 0.99 * with_nhs.len() as f64);
        let digits = |r: &&&SynthRecord| r.nhs_number.replace(' ', "");
        assert!(
            with_nhs
                .iter()
                .filter(|r| valid_nhs(&r.nhs_number))
                .all(|r| digits(&r).starts_with("999") || digits(&r) == "0000000000")
        );
    }

    #[test]
    fn nhs_numbers_and_contacts_belong_to_one_person() {
        let records = generate(&SynthConfig { people: 20_000, seed: 11, ..SynthConfig::default() });
        // Who holds each NHS number, mobile and email (a landline is a home's).
        let mut holders: HashMap<String, std::collections::HashSet<&str>> = HashMap::new();
        for record in &records {
            let nhs = record.nhs_number.replace(' ', "");
            let values = [
                (valid_nhs(&nhs) && nhs != "0000000000").then(|| format!("nhs {nhs}")),
                record.phone.starts_with("07700").then(|| format!("mobile {}", record.phone)),
                (!record.email.is_empty())
                    .then(|| format!("email {}", record.email.to_lowercase())),
            ];
            for value in values.into_iter().flatten() {
                holders.entry(value).or_default().insert(&record.person_id);
            }
        }
        let shared = |kind: &str| {
            holders
                .iter()
                .filter(|(value, people)| value.starts_with(kind) && people.len() > 1)
                .count()
        };
        // Only the deliberate mistakes share a number: a relative's number on a record
        // (1 in 2,000) or a digit mistyped into someone else's (rarer still). Numbers drawn
        // at random would share about 220 here.
        assert!(shared("nhs") <= 30, "shared NHS numbers {}", shared("nhs"));
        assert_eq!(shared("mobile"), 0);
        assert_eq!(shared("email"), 0);
    }

    #[test]
    fn twins_and_jr_sr() {
        let records = generate(&SynthConfig { people: 30_000, seed: 3, ..SynthConfig::default() });
        let mut groups: HashMap<&str, Vec<&SynthRecord>> = HashMap::new();
        for record in records.iter().filter(|r| r.hard_group.is_some()) {
            groups.entry(record.hard_group.as_deref().unwrap()).or_default().push(record);
        }
        let twins: Vec<_> = groups.iter().filter(|(label, _)| label.starts_with("twin")).collect();
        let jrsr: Vec<_> = groups.iter().filter(|(label, _)| label.starts_with("jrsr")).collect();
        assert!(twins.len() > 50, "twin groups {}", twins.len());
        assert!(jrsr.len() > 30, "jr/sr groups {}", jrsr.len());
        let mut without_nhs = 0;
        for (_, members) in groups.iter() {
            let persons: std::collections::HashSet<&str> =
                members.iter().map(|r| r.person_id.as_str()).collect();
            assert_eq!(persons.len(), 2);
            if members.iter().all(|r| r.nhs_number.is_empty()) {
                without_nhs += 1;
            }
        }
        let share = without_nhs as f64 / groups.len() as f64;
        assert!((0.35..0.65).contains(&share), "share of hard groups without NHS numbers {share}");
    }

    #[test]
    fn relatives_at_one_home_have_plainly_different_first_names_but_for_jr_and_sr() {
        assert!(one_name(&Nicknames::builtin(), "Henry", "Harry"));
        assert!(one_name(&Nicknames::builtin(), "Isabella", "Isabelle"));
        assert!(!one_name(&Nicknames::builtin(), "Ella", "Bella"));
        let mut generator = Generator::new(11, 20_000);
        while generator.persons.len() < 20_000 {
            generator.household(20_000);
        }
        let (mut families, mut jr_sr) = (0, 0);
        for person in &generator.persons {
            if generator.homes[person.home].care_home.is_some() || person.household.len() < 3 {
                continue;
            }
            families += 1;
            for &other in person.household.iter().filter(|&&other| other != person.id) {
                let other = &generator.persons[other];
                if one_name(&generator.nicknames, &other.given[0], &person.given[0]) {
                    assert!(
                        person.suffix.is_some()
                            && other.suffix.is_some()
                            && person.suffix != other.suffix,
                        "{:?} and {:?} share a first name",
                        person.given,
                        other.given
                    );
                    jr_sr += 1;
                }
            }
        }
        assert!(families > 5_000 && jr_sr > 20, "{families} in families, {jr_sr} Jr/Sr");
    }

    #[test]
    fn hospital_numbers_are_one_per_person_in_sequence_and_change_nothing_else() {
        let config = SynthConfig { people: 5_000, seed: 4, ..SynthConfig::default() };
        let plain = generate(&config);
        let with = generate(&SynthConfig { hospital_numbers: true, ..config });
        // Numbered in order of first appearance; each carried copy is the person's own
        // number or it with one digit wrong.
        let mut order: HashMap<&str, usize> = HashMap::new();
        let (mut carried, mut mistyped) = (0, 0);
        for (a, b) in plain.iter().zip(&with) {
            assert_eq!(a, &SynthRecord { hospital_number: String::new(), ..b.clone() });
            let next = order.len();
            let own = format!("H{}", 1_000_000 + *order.entry(&b.person_id).or_insert(next));
            if b.hospital_number.is_empty() {
                continue;
            }
            carried += 1;
            let differing =
                own.bytes().zip(b.hospital_number.bytes()).filter(|(x, y)| x != y).count();
            assert_eq!(own.len(), b.hospital_number.len());
            assert!(differing <= 1, "{own} carried as {}", b.hospital_number);
            mistyped += differing;
        }
        let share = carried as f64 / with.len() as f64;
        assert!((0.57..0.63).contains(&share), "{share}");
        assert!(mistyped > 0 && mistyped < carried / 50, "{mistyped} of {carried}");
        let mut out = Vec::new();
        write_records(&with, &mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .ends_with(",email,hospital_number")
        );
    }

    /// A former family name goes only on records made under a married person's new
    /// name, the person's own former name (which their records from before the
    /// marriage carry), and nothing else changes.
    #[test]
    fn previous_names_are_a_married_persons_own_and_change_nothing_else() {
        let config = SynthConfig { people: 5_000, seed: 4, ..SynthConfig::default() };
        let plain = generate(&config);
        let with = generate(&SynthConfig { previous_names: true, ..config });
        let folded = |name: &str| name.to_lowercase();
        // The family names each person's records made before a marriage carry.
        let mut former: HashMap<&str, Vec<String>> = HashMap::new();
        for record in with.iter().filter(|record| record.under_former_name) {
            former.entry(&record.person_id).or_default().push(folded(&record.family_name));
        }
        let mut carried = 0;
        for (a, b) in plain.iter().zip(&with) {
            assert_eq!(a, &SynthRecord { previous_family_name: String::new(), ..b.clone() });
            if b.previous_family_name.is_empty() {
                continue;
            }
            carried += 1;
            assert!(!b.under_former_name, "{b:?}");
            assert_ne!(folded(&b.previous_family_name), folded(&b.family_name), "{b:?}");
            if let Some(names) = former.get(b.person_id.as_str()) {
                // Those records' names, a typo, a suffix or a placeholder aside.
                let name = folded(&b.previous_family_name);
                let alike =
                    |old: &String| old == "unknown" || mpi_matching::jaro_winkler(old, &name) > 0.8;
                assert!(names.iter().any(alike), "{b:?} {names:?}");
            }
        }
        assert!(carried > 30, "{carried} of {}", with.len());
        let mut out = Vec::new();
        write_records(&with, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().next().unwrap().ends_with(",email,previous_family_name"));
    }

    #[test]
    fn csv_headers() {
        let records = generate(&SynthConfig { people: 10, seed: 1, ..SynthConfig::default() });
        let mut out = Vec::new();
        write_records(&records, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("source_system,local_id,nhs_number,given_name,family_name,date_of_birth,sex,address_line1,address_line2,town,postcode,phone,email\n"));
        let mut out = Vec::new();
        write_truth(&records, &mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("source_system,local_id,person_id,hard_group\n")
        );
    }
}
