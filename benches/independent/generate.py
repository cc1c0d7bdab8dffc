"""A second synthetic generator, written apart from `mpi synth`, for a check that the
engine was not built to one generator's habits.

    python3 generate.py PEOPLE SEED OUT.csv      # also writes OUT_truth.csv

Its people, names, households and noise are drawn its own way, not as `mpi synth`
draws them: other name lists, real-looking NHS numbers (not 999), a random file order,
and noise at other rates, on the heavy side of real UK care data:

- households: 55% of draws one person alone; 40% a couple (the woman under the man's
  family name four times in five, some of those with a maiden name that 35% of her
  records carry) with up to three children, none given a parent's or a sibling's given
  name; 3% twins (same birth date, family name and
  home, different given names drawn at random, so twins can share an initial); 1.5%
  a father and son of one name (Jr/Sr, no suffix written). Half the twins and Jr/Sr
  pairs have no NHS number. 15% of people have a former address that half their
  records carry;
- each record, independently: a nickname 10%, a typo in the given name 7% (a letter
  dropped, changed, swapped or added), an initial only 3%, no given name 1.5%, a
  middle name 30% of the times one exists; a typo in the family name 6%; no birth date
  7%, day and month swapped 3%, the day off by one or ten 3%, the year off by one 1%;
  no postcode 12% (a letter changed 3%); no address 8%; a phone 45% (the person's
  mobile, else the home's landline); sex missing 5%; the NHS number by system (GP 95%,
  hospital 90%, ambulance 50%, council 25%, care home 15%);
- dates in six formats (two-digit years for 1930 on), names in upper, title or lower
  case, postcodes with and without their space.

The truth file has a `hard_group` column naming twins and Jr/Sr pairs, as
`mpi synth`'s does, so `mpi eval` counts them. The same PEOPLE and SEED give the same
files on any machine (Python's `random.Random` is the same everywhere).
"""

import csv
import random
import sys

MALE = """james john robert michael william david richard joseph thomas charles christopher
daniel matthew anthony mark donald steven paul andrew joshua kenneth kevin brian george
timothy ronald edward jason jeffrey ryan jacob gary nicholas eric jonathan stephen larry
justin scott brandon benjamin samuel gregory alexander frank patrick raymond jack dennis
jerry tyler aaron jose adam nathan henry douglas zachary peter kyle noah ethan jeremy
walter christian keith roger terry austin sean gerald carl harold dylan arthur lawrence
jordan jesse bryan billy bruce gabriel joe logan alan juan albert willie elijah wayne
randy vincent mason roy ralph bobby russell bradley philip eugene mohammed ahmed ali
imran tariq rajesh sanjay amir omar hassan piotr tomasz krzysztof liam oliver harry jake
leo alfie archie oscar""".split()
FEMALE = """mary patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy
betty margaret sandra ashley kimberly emily donna michelle carol amanda dorothy melissa
deborah stephanie rebecca sharon laura cynthia kathleen amy angela shirley anna brenda
pamela emma nicole helen samantha katherine christine debra rachel carolyn janet
catherine maria heather diane ruth julie olivia joyce virginia victoria kelly lauren
christina joan evelyn judith megan andrea cheryl hannah jacqueline martha gloria teresa
ann sara madison frances kathryn janice jean abigail alice judy sophia grace denise amber
doris marilyn danielle beverly isabella theresa diana natalie brittany charlotte marie
kayla alexis lori fatima aisha priya sunita agnieszka katarzyna siobhan niamh isla ava
mia poppy freya""".split()
FAMILY = """smith jones williams taylor brown davies evans wilson thomas johnson roberts
robinson thompson wright walker white edwards hughes green hall lewis harris clarke patel
jackson wood turner martin cooper hill ward morris moore clark lee king baker harrison
morgan allen james scott phillips watson davis parker price bennett young griffiths
mitchell kelly cook carter richardson bailey collins bell shaw murphy miller cox richards
khan marshall anderson simpson ellis adams singh begum wilkinson foster chapman powell
webb rogers gray mason ali hunt hussain campbell matthews owen palmer holmes mills barnes
knight lloyd butler russell barker fisher stevens jenkins murray dixon harvey graham
pearson ahmed fletcher walsh kaur gibson howard andrews stewart elliott reynolds saunders
payne fox ford pearce day brooks west lawrence cole atkinson bradley spencer gill dawson
ball burton obrien watts rose booth perry ryan grant wells armstrong francis rees hayes
hart hudson newman barrett webster hunter gregory carr lowe page marsh riley dunn woods
parsons berry stone reid holland hawkins harding porter robertson newton oconnor kennedy
nowak kowalski mcdonald macdonald ohara sharma chowdhury rahman islam okafor
mensah""".split()
NICKNAMES = {
    "william": ["bill", "will", "billy"], "robert": ["bob", "rob", "bobby"],
    "richard": ["rick", "dick", "richie"], "elizabeth": ["liz", "beth", "lizzie"],
    "margaret": ["maggie", "peggy", "meg"], "katherine": ["kate", "kathy", "katie"],
    "catherine": ["cathy", "kate"], "michael": ["mike", "mick"],
    "james": ["jim", "jimmy", "jamie"], "thomas": ["tom", "tommy"],
    "christopher": ["chris"], "daniel": ["dan", "danny"], "matthew": ["matt"],
    "anthony": ["tony"], "joseph": ["joe", "joey"], "samuel": ["sam"],
    "alexander": ["alex", "sandy"], "benjamin": ["ben"], "nicholas": ["nick"],
    "jennifer": ["jenny", "jen"], "susan": ["sue", "susie"], "rebecca": ["becky"],
    "deborah": ["debbie", "deb"], "patricia": ["pat", "trish"], "victoria": ["vicky"],
    "samantha": ["sam"], "jacqueline": ["jackie"], "edward": ["ed", "ted", "eddie"],
    "andrew": ["andy", "drew"], "stephen": ["steve"], "steven": ["steve"],
    "kenneth": ["ken", "kenny"], "timothy": ["tim"], "gregory": ["greg"],
    "peter": ["pete"], "harold": ["harry"], "henry": ["harry", "hal"],
    "dorothy": ["dot", "dottie"], "pamela": ["pam"], "christine": ["chris", "chrissie"],
    "abigail": ["abby"], "isabella": ["bella", "izzy"], "charlotte": ["charlie", "lottie"],
    "frances": ["fran"], "judith": ["judy"], "alice": ["ally"],
}
STREETS = """High Street|Station Road|Main Street|Park Road|Church Road|Church Street|London
Road|Victoria Road|Green Lane|Manor Road|Church Lane|Park Avenue|The Avenue|The
Crescent|Queens Road|New Road|Grange Road|Kings Road|Alexandra Road|Glebe Road|York
Road|Mill Lane|Springfield Road|Albert Road|Highfield Road|North Street|Windsor
Road|Stanley Road|Chester Road|Richmond Road""".replace("\n", " ").split("|")
TOWNS = [
    ("Sheffield", "S"), ("Nottingham", "NG"), ("Leicester", "LE"), ("Coventry", "CV"),
    ("Hull", "HU"), ("Stoke-on-Trent", "ST"), ("Derby", "DE"), ("Southampton", "SO"),
    ("Portsmouth", "PO"), ("Plymouth", "PL"), ("Reading", "RG"), ("Luton", "LU"),
    ("Wolverhampton", "WV"), ("Sunderland", "SR"), ("York", "YO"),
]
ABBREVIATIONS = {"Street": "St", "Road": "Rd", "Lane": "Ln", "Avenue": "Ave", "Crescent": "Cres"}
UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
# (system, share of its records carrying the person's NHS number)
SYSTEMS = [("gp", 0.95), ("hospital", 0.9), ("council", 0.25), ("ambulance", 0.5), ("carehome", 0.15)]
LAST_YEAR = 2024


class Generator:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.people: list[dict] = []

    # Values.
    def nhs_number(self) -> str:
        """Ten digits whose last is the Modulus 11 check digit of the nine before it."""
        while True:
            digits = [self.rng.randint(4, 7)] + [self.rng.randint(0, 9) for _ in range(8)]
            check = 11 - sum(d * (10 - i) for i, d in enumerate(digits)) % 11
            if check == 10:
                continue
            return "".join(map(str, digits + [0 if check == 11 else check]))

    def postcode(self, area: str) -> str:
        unit = "".join(self.rng.choice(UNIT_LETTERS) for _ in range(2))
        return f"{area}{self.rng.randint(1, 20)} {self.rng.randint(0, 9)}{unit}"

    def digits(self, prefix: str) -> str:
        return prefix + "".join(str(self.rng.randint(0, 9)) for _ in range(11 - len(prefix)))

    def home(self, landline_share: float) -> tuple:
        town, area = self.rng.choice(TOWNS)
        line = f"{self.rng.randint(1, 250)} {self.rng.choice(STREETS)}"
        landline = self.digits("01") if self.rng.random() < landline_share else ""
        return (line, town, self.postcode(area), landline)

    def birth_date(self, first_year: int = 1922) -> tuple:
        return (self.rng.randint(first_year, LAST_YEAR), self.rng.randint(1, 12), self.rng.randint(1, 28))

    # People.
    def person(self, sex=None, family=None, born=None, home=None, given=None) -> dict:
        rng = self.rng
        sex = sex or rng.choice("MF")
        names = MALE if sex == "M" else FEMALE
        given = given or rng.choice(names)
        middle = rng.choice(names) if rng.random() < 0.4 else ""
        person = {
            "id": f"Q{len(self.people):06d}",
            "sex": sex,
            "given": given,
            "middle": "" if middle == given else middle,
            "family": family or rng.choice(FAMILY),
            "born": born or self.birth_date(),
            "home": home or self.home(0.3),
            "mobile": self.digits("07") if rng.random() < 0.5 else "",
            "nhs": self.nhs_number() if rng.random() < 0.92 else "",
            "maiden": None,
            "hard_group": "",
            "old_home": None,
        }
        if rng.random() < 0.25:
            person["email"] = f"{given}.{person['family']}{rng.randint(1, 99)}@example.org"
        else:
            person["email"] = ""
        self.people.append(person)
        return person

    def family(self) -> None:
        rng = self.rng
        family, home = rng.choice(FAMILY), self.home(0.6)
        father = self.person("M", family, home=home)
        mother = self.person("F", family if rng.random() < 0.8 else None, home=home)
        if mother["family"] == family and mother["born"][0] < 2000 and rng.random() < 0.6:
            mother["maiden"] = rng.choice(FAMILY)
        # Children are not given a parent's or a sibling's given name (a son named for
        # his father is drawn as a Jr/Sr pair, below, and counted as one).
        taken = {father["given"], mother["given"]}
        for _ in range(rng.randint(0, 3)):
            year = max(father["born"][0], mother["born"][0]) + rng.randint(18, 40)
            if year <= LAST_YEAR:
                sex = rng.choice("MF")
                given = rng.choice([name for name in (MALE if sex == "M" else FEMALE) if name not in taken])
                taken.add(given)
                self.person(sex, family, born=(year, rng.randint(1, 12), rng.randint(1, 28)),
                            home=home, given=given)

    def twins(self) -> None:
        rng = self.rng
        family, home = rng.choice(FAMILY), self.home(0.6)
        born = self.birth_date(1940)
        first = self.person(family=family, born=born, home=home)
        second = self.person(family=family, born=born, home=home)
        while second["given"] == first["given"]:
            second["given"] = rng.choice(MALE if second["sex"] == "M" else FEMALE)
        self.hard_group(first, second)

    def father_and_son(self) -> None:
        rng = self.rng
        family, home = rng.choice(FAMILY), self.home(0.6)
        father = self.person("M", family, home=home)
        year = father["born"][0] + rng.randint(20, 40)
        if year <= LAST_YEAR:
            born = (year, rng.randint(1, 12), rng.randint(1, 28))
            son = self.person("M", family, born=born, home=home, given=father["given"])
            self.hard_group(father, son)

    def hard_group(self, first: dict, second: dict) -> None:
        first["hard_group"] = second["hard_group"] = first["id"]
        if self.rng.random() < 0.5:
            first["nhs"] = second["nhs"] = ""

    def populate(self, people: int) -> None:
        while len(self.people) < people:
            draw = self.rng.random()
            if draw < 0.55:
                self.person()
            elif draw < 0.955:
                self.family()
            elif draw < 0.985:
                self.twins()
            else:
                self.father_and_son()
        for person in self.people:
            if self.rng.random() < 0.15:
                person["old_home"] = self.home(0.0)

    # Records.
    def typo(self, text: str) -> str:
        if len(text) < 3:
            return text
        rng = self.rng
        at, kind = rng.randrange(len(text)), rng.random()
        if kind < 0.3:
            return text[:at] + text[at + 1:]
        if kind < 0.6:
            return text[:at] + rng.choice("abcdefghijklmnopqrstuvwxyz") + text[at + 1:]
        if kind < 0.8 and at < len(text) - 1:
            return text[:at] + text[at + 1] + text[at] + text[at + 2:]
        return text[:at] + rng.choice("aeiou") + text[at:]

    def case(self, text: str) -> str:
        draw = self.rng.random()
        return text.upper() if draw < 0.3 else text.title() if draw < 0.85 else text.lower()

    def date_text(self, date: tuple) -> str:
        year, month, day = date
        draw = self.rng.random()
        if draw < 0.35:
            return f"{day:02d}/{month:02d}/{year}"
        if draw < 0.6:
            return f"{year}-{month:02d}-{day:02d}"
        if draw < 0.75:
            return f"{day}/{month}/{year}"
        if draw < 0.85:
            return f"{day:02d}-{MONTHS[month - 1]}-{year}"
        if draw < 0.95:
            return f"{year}{month:02d}{day:02d}"
        if year >= 1930:
            return f"{day:02d}/{month:02d}/{year % 100:02d}"
        return f"{day:02d}/{month:02d}/{year}"

    def given_name(self, person: dict) -> str:
        rng, given = self.rng, person["given"]
        draw = rng.random()
        if draw < 0.10 and given in NICKNAMES:
            given = rng.choice(NICKNAMES[given])
        elif draw < 0.17:
            given = self.typo(given)
        elif draw < 0.20:
            given = given[0]
        elif draw < 0.215:
            return ""
        if person["middle"] and rng.random() < 0.3:
            given = f"{given} {person['middle']}"
        return given

    def family_name(self, person: dict) -> str:
        rng = self.rng
        family = person["maiden"] if person["maiden"] and rng.random() < 0.35 else person["family"]
        if rng.random() < 0.06:
            family = self.typo(family)
        if family in ("obrien", "oconnor", "ohara") and rng.random() < 0.7:
            family = "O'" + family[1:]
        return family

    def birth_date_text(self, born: tuple) -> str:
        rng = self.rng
        year, month, day = born
        draw = rng.random()
        if draw < 0.07:
            return ""
        if draw < 0.10 and day <= 12:
            return self.date_text((year, day, month))
        if draw < 0.13:
            slipped = day + rng.choice([-1, 1, 10, -10])
            return self.date_text((year, month, slipped if 1 <= slipped <= 28 else day))
        if draw < 0.14:
            return self.date_text((year + rng.choice([-1, 1]), month, day))
        return self.date_text(born)

    def record(self, person: dict, system: str, share_with_nhs: float, local_id: str) -> list:
        rng = self.rng
        home = person["old_home"] if person["old_home"] and rng.random() < 0.5 else person["home"]
        line, town, postcode, landline = home
        if rng.random() < 0.3:
            for word, short in ABBREVIATIONS.items():
                line = line.replace(word, short)
        if rng.random() < 0.12:
            postcode = ""
        elif rng.random() < 0.03:
            postcode = postcode[:-1] + rng.choice("ABDEFGHJ")
        if rng.random() < 0.2:
            postcode = postcode.replace(" ", "").lower()
        if rng.random() < 0.08:
            line = town = ""
        phone = (person["mobile"] or landline) if rng.random() < 0.45 else ""
        sex = person["sex"] if rng.random() > 0.05 else ""
        if sex and rng.random() < 0.4:
            sex = {"M": "Male", "F": "Female"}[sex]
        nhs = person["nhs"] if rng.random() < share_with_nhs else ""
        if nhs and rng.random() < 0.3:
            nhs = f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}"
        email = person["email"] if rng.random() < 0.5 else ""
        given = self.case(self.given_name(person))
        family = self.case(self.family_name(person))
        born = self.birth_date_text(person["born"])
        return [system, local_id, nhs, given, family, born, sex, line, town, postcode, phone, email]

    def records(self) -> tuple[list, list]:
        rng = self.rng
        rows, truth = [], []
        counts = {system: 0 for system, _ in SYSTEMS}
        for person in self.people:
            for _ in range(1 + min(4, int(rng.expovariate(0.9)))):
                system, share_with_nhs = rng.choice(SYSTEMS)
                counts[system] += 1
                local_id = f"{system[:2].upper()}{counts[system]:07d}"
                rows.append(self.record(person, system, share_with_nhs, local_id))
                truth.append([system, local_id, person["id"], person["hard_group"]])
        order = list(range(len(rows)))
        rng.shuffle(order)
        return [rows[i] for i in order], [truth[i] for i in order]


HEADER = ("source_system local_id nhs_number given_name family_name date_of_birth sex "
          "address_line1 town postcode phone email").split()


def main(people: int, seed: int, out: str) -> None:
    generator = Generator(seed)
    generator.populate(people)
    rows, truth = generator.records()
    with open(out, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        writer.writerows(rows)
    truth_path = out[:-4] + "_truth.csv" if out.endswith(".csv") else out + "_truth.csv"
    with open(truth_path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["source_system", "local_id", "person_id", "hard_group"])
        writer.writerows(truth)
    print(f"{len(rows)} records of {len(generator.people)} people: {out}, {truth_path}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
