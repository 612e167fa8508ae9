"""Notifications in the reader's language (issue 13): each sentence the services write is
recognised and rebuilt in French, the values it carries translated; unknown text is left alone."""

from __future__ import annotations

import pytest

from allocator import notices

FR = notices.catalogue_gettext("fr")


@pytest.mark.parametrize(
    ("english", "french"),
    [
        (
            "Dr Who (investigator, site P1) broke the blind of subject P1-013 on 2026-03-02 10:16 UTC, offline "
            "(code-break sheet, registered by Ann). Reason: Pregnancy. The treatment is not stated here; the "
            "unblinding is recorded in the service.",
            "Dr Who (Investigateur, centre P1) a levé l'aveugle du patient P1-013 le 2026-03-02 10:16 UTC, hors "
            "ligne (fiche de levée d'aveugle, enregistrée par Ann). Motif : Grossesse. Le traitement n'est pas "
            "indiqué ici ; la levée d'aveugle est enregistrée dans le service.",
        ),
        (
            "Subject P1-014 was withdrawn (consent withdrawn) on 2026-03-02, recorded by Inv-P1. Dispense no "
            "further kit; the kits allocated to P1-014 stay assigned to it.",
            "Le patient P1-014 est sorti de l'étude (retrait du consentement) le 2026-03-02, enregistré par "
            "Inv-P1. Ne dispensez plus aucun kit ; les kits alloués à P1-014 lui restent attribués.",
        ),
        ("Withdrawal of P1-014", "Sortie d'étude de P1-014"),
        (
            "DRILL: emergency unblinding drill on DRILL-P1-01 at site P1",
            "EXERCICE : exercice de levée d'aveugle en urgence sur DRILL-P1-01 au centre P1",
        ),
        (
            "Dr Who (investigator, site P1) ran an emergency unblinding drill on drill subject DRILL-P1-01 on "
            "2026-03-02 10:16 UTC, offline (drill code-break sheet, registered by Ann). This is a drill: no "
            "patient's blind is broken and it is counted nowhere but in the drill log.",
            "Dr Who (Investigateur, centre P1) a réalisé un exercice de levée d'aveugle en urgence sur le sujet "
            "d'exercice DRILL-P1-01 le 2026-03-02 10:16 UTC, hors ligne (fiche de levée d'aveugle d'exercice, "
            "enregistrée par Ann). Ceci est un exercice : l'aveugle d'aucun patient n'est levé et il n'est "
            "compté nulle part ailleurs que dans le journal des exercices.",
        ),
        ("Resupply SH-0004 for site P2", "Réapprovisionnement SH-0004 pour le centre P2"),
        (
            "Shipment SH-0004 of 12 kits for site P2 was prepared automatically: the site holds 3 treatment "
            "course(s), below its level of 4. Ship it from the depot.",
            "L'envoi SH-0004 de 12 kits pour le centre P2 a été préparé automatiquement : le centre détient 3 "
            "traitement(s) complet(s), sous son seuil de 4. Expédiez-le depuis le dépôt.",
        ),
        (
            "Site P2 holds 3 treatment course(s), below its level of 4, and the depot does not hold enough "
            "usable kits for a balanced shipment of 12 kits. Add kits to the depot, with their code-break sheets.",
            "Le centre P2 détient 3 traitement(s) complet(s), sous son seuil de 4, et le dépôt ne détient pas "
            "assez de kits utilisables pour un envoi équilibré de 12 kits. Ajoutez des kits au dépôt, avec leurs "
            "fiches de levée d'aveugle.",
        ),
        ("Something nobody wrote a pattern for.", "Something nobody wrote a pattern for."),
    ],
)
def test_notifications_read_in_french(english: str, french: str) -> None:
    assert notices.translate(english, FR) == french
    in_english = notices.translate(english, notices.catalogue_gettext("en"))
    assert in_english == english.replace("(investigator,", "(Investigator,")  # a role by its title
