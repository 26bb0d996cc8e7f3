"""The study database.

Configuration (admin): ``ClassifierModel``, ``ModelPair``, ``ImageSet``/``Image``, ``Study``.
Preparation (Celery): ``Prediction``, ``Stimulus``, ``Item``, ``Job``.
The worker flow: ``Participant``, ``Assignment``, ``Response``.

Rules that the database can hold are constraints here (one participant per platform identity
and study, one response per assignment, the Likert range, an item never twice for a worker);
the services in ``studies/services`` hold the rest. Models carry no business logic.
"""

from __future__ import annotations

import secrets
import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from studies.designs.registry import kind_choices


def new_token() -> str:
    """An unguessable URL-safe token (192 bits) for public identifiers.

    Never starts with ``-``, so a slug given on a command line (``manage.py export_study <slug>``)
    is not read as an option (1 token in 64 did; the first symbol then becomes ``x``).
    """
    token = secrets.token_urlsafe(24)
    return "x" + token[1:] if token.startswith("-") else token


def new_seed() -> int:
    """A fresh 31-bit random seed recorded with a study."""
    return secrets.randbelow(2**31 - 1)


def new_completion_code() -> str:
    """A completion code as crowd platforms use them (8 upper-case letters and digits)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def default_mean() -> list[float]:
    return list(IMAGENET_MEAN)


def default_std() -> list[float]:
    return list(IMAGENET_STD)


class ClassifierModel(models.Model):
    """An image classifier whose explanations are studied."""

    name = models.SlugField(max_length=80, unique=True)
    arch = models.CharField(
        max_length=80,
        help_text="torchvision architecture name (e.g. resnet18) or a shipped model "
        "(efficientnet_lite0, efficientnet_lite2, synthetic_cnn)",
    )
    weights = models.FileField(upload_to="weights/", blank=True, help_text="state dict (.pt); empty = shipped weights")
    weights_sha256 = models.CharField(max_length=64, blank=True)
    class_names = models.JSONField(default=list, help_text="list of class names, index = class id")
    target_layer = models.CharField(max_length=200, blank=True, help_text="dotted module name for CAM methods")
    input_size = models.PositiveIntegerField(default=224)
    mean = models.JSONField(default=default_mean)
    std = models.JSONField(default=default_std)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelPair(models.Model):
    """Two models compared side by side in a trust study (Robot A / Robot B)."""

    class Relation(models.TextChoices):
        WEAKER_STRONGER = "weaker_stronger", "weaker (A) vs stronger (B)"
        BIASED_UNBIASED = "biased_unbiased", "biased (A) vs unbiased (B)"
        OTHER = "other", "other"

    name = models.SlugField(max_length=80, unique=True)
    model_a = models.ForeignKey(ClassifierModel, on_delete=models.PROTECT, related_name="pairs_as_a")
    model_b = models.ForeignKey(ClassifierModel, on_delete=models.PROTECT, related_name="pairs_as_b")
    relation = models.CharField(max_length=32, choices=Relation.choices, default=Relation.WEAKER_STRONGER)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=~Q(model_a=models.F("model_b")), name="pair_models_differ"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.model_a} vs {self.model_b})"


class ImageSet(models.Model):
    """A named collection of images with their categories, boxes and optional masks."""

    class Source(models.TextChoices):
        MANIFEST = "manifest", "image folder + CSV manifest"
        VOC = "voc", "PASCAL VOC annotations"
        PHOTOS = "photos", "offline photo world"
        SYNTHETIC = "synthetic", "offline synthetic world"

    name = models.SlugField(max_length=80, unique=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANIFEST)
    categories = models.JSONField(default=list, help_text="allowed category names")
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Image(models.Model):
    """One image. ``boxes`` is a list of ``{"category", "x0", "y0", "x1", "y1"}`` in pixels."""

    image_set = models.ForeignKey(ImageSet, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to="images/")
    original_name = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    categories = models.JSONField(default=list)
    boxes = models.JSONField(default=list, blank=True)
    mask = models.FileField(upload_to="masks/", blank=True, help_text="PNG, pixel value = 1 + category index")

    class Meta:
        ordering = ["image_set", "original_name"]
        constraints = [
            models.UniqueConstraint(fields=["image_set", "original_name"], name="image_name_unique_in_set"),
        ]

    def __str__(self) -> str:
        return self.original_name


class Study(models.Model):
    """A human study: what is shown, to whom, how often, and how it is recruited."""

    class Kind(models.TextChoices):
        """The two designs of the Grad-CAM paper, by name (fixtures and tests construct studies with
        them). The field's choices are every registered design (``studies.designs``), not this list."""

        CLASS_DISCRIMINATION = "class_discrimination", "What do you see? (class discrimination)"
        TRUST = "trust", "Which robot is more reasonable? (trust)"

    class Platform(models.TextChoices):
        MTURK = "mturk", "Amazon Mechanical Turk"
        PROLIFIC = "prolific", "Prolific"
        LINK = "link", "Plain link"

    class Status(models.TextChoices):
        DRAFT = "draft", "draft"
        PREPARING = "preparing", "preparing"
        READY = "ready", "ready"
        LIVE = "live", "live"
        CLOSED = "closed", "closed"
        FAILED = "failed", "preparation failed"

    name = models.CharField(max_length=200, help_text="internal name, seen by staff only")
    public_title = models.CharField(
        max_length=120, default="Image study", help_text="what workers see as the page and tab title; must not reveal the design"
    )
    public_description = models.TextField(blank=True, help_text="what workers see under the title (optional)")
    slug = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    kind = models.CharField(max_length=32, choices=kind_choices)
    methods = models.JSONField(default=list, help_text='explainer method names, e.g. ["gradcam", "guided_gradcam"]')
    model = models.ForeignKey(
        ClassifierModel, on_delete=models.PROTECT, null=True, blank=True, related_name="studies"
    )
    model_pair = models.ForeignKey(ModelPair, on_delete=models.PROTECT, null=True, blank=True, related_name="studies")
    image_set = models.ForeignKey(ImageSet, on_delete=models.PROTECT, related_name="studies")
    judgments_per_item = models.PositiveIntegerField(default=9, validators=[MinValueValidator(1)])
    trials_per_participant = models.PositiveIntegerField(default=20, validators=[MinValueValidator(1)])
    catch_trials = models.PositiveIntegerField(default=2, help_text="catch trials per participant")
    practice_trials = models.PositiveIntegerField(default=2)
    practice_pass_fraction = models.FloatField(default=1.0, validators=[MinValueValidator(0), MaxValueValidator(1)])
    practice_attempts = models.PositiveIntegerField(
        default=2,
        validators=[MinValueValidator(1)],
        help_text="practice rounds a worker may take (a different draw each time); then the study ends for them "
        "(screened out)",
    )
    min_viewport_width = models.PositiveIntegerField(
        default=0, help_text="CSS pixels; a narrower screen is asked to switch device before consent (0 = any)"
    )
    min_viewport_height = models.PositiveIntegerField(default=0, help_text="CSS pixels (0 = any)")
    arms = models.JSONField(
        default=list, blank=True,
        help_text='between-subject arms: [{"name": "gradcam", "methods": ["gradcam"]}, ...]; each participant is '
        "assigned one arm (balanced) and sees only its methods; empty = every participant sees every method",
    )
    question = models.TextField(blank=True, help_text="question shown with each trial; empty = the kind's default")
    wording = models.JSONField(default=dict, blank=True, help_text="labels such as the five trust answers")
    consent_text = models.TextField(blank=True)
    consent_version = models.CharField(max_length=32, default="1")
    instructions = models.TextField(blank=True)
    questionnaire = models.JSONField(default=list, blank=True, help_text="optional closing questions")
    platform = models.CharField(max_length=16, choices=Platform.choices, default=Platform.LINK)
    completion_code = models.CharField(
        max_length=32,
        default=new_completion_code,
        help_text="Prolific's study completion code (Prolific checks one code per study); MTurk and link "
        "participants each get their own code, derived from this study and their token",
    )
    prolific_completion_url = models.URLField(blank=True)
    seed = models.BigIntegerField(default=new_seed)
    lease_seconds = models.PositiveIntegerField(default=600)
    require_both_correct = models.BooleanField(default=True, help_text="trust: only images both models get right")
    explainer_options = models.JSONField(default=dict, blank=True)
    exclusion_rules = models.JSONField(default=list, blank=True)
    exclusion_group = models.ForeignKey(
        "ExclusionGroup",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="studies",
        help_text="related studies: a worker who took part in one of them, or is on the group's list, cannot start this one",
    )
    require_invitation = models.BooleanField(
        default=False, help_text="entry only through a signed, single-use invitation link (link studies)"
    )
    entries_per_client = models.PositiveIntegerField(
        default=5,
        help_text="unfinished participants one client address may have started in the last 24 h (0 = no cap); "
        "raise it for a lab behind one address",
    )
    entry_rate_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="entries per minute per client address; empty = the site's default",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    validity_report = models.JSONField(
        default=dict, blank=True, help_text="the last pre-launch validity audit (audit_stimuli), with its figures"
    )
    validity_acknowledged = models.BooleanField(
        default=False, help_text="publish although the validity audit flagged something (the researcher's explicit choice)"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"
        permissions = [("export_worker_ids", "Can export raw platform worker ids (payment lists, participants CSV)")]
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind="trust") | Q(model_pair__isnull=False), name="trust_study_has_pair"
            ),
            models.CheckConstraint(
                condition=~Q(kind="class_discrimination") | Q(model__isnull=False),
                name="discrimination_study_has_model",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """``explainer_options`` must read as the design's options (``studies.designs.options``): a
        bad value is an error on that field naming the key (``full_clean``, the admin form)."""
        from django.core.exceptions import ValidationError

        from studies.designs.registry import UnknownDesign, design_for

        super().clean()
        try:
            design = design_for(self)
        except UnknownDesign:
            return  # the kind field's own error says it
        if errors := design.options_errors(self):
            raise ValidationError({"explainer_options": errors})


class ExclusionGroup(models.Model):
    """Related studies that share one pool of workers: taking part in one excludes the others."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ListedWorker(models.Model):
    """A platform id on a list of workers who may not take part (matched case- and space-insensitively)."""

    platform_worker_id = models.CharField(max_length=255)
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.platform_worker_id


class ExclusionGroupWorker(ListedWorker):
    """A platform id on an exclusion group's list (imported from CSV; stored normalised)."""

    group = models.ForeignKey(ExclusionGroup, on_delete=models.CASCADE, related_name="workers")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "platform_worker_id"], name="exclusion_group_worker_unique"),
        ]


class ExcludedWorker(ListedWorker):
    """A platform worker who may not take part in a study (e.g. took a related study)."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="excluded_workers")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "platform_worker_id"], name="excluded_worker_unique"),
        ]


class Prediction(models.Model):
    """A model's top-k classes for an image, stored for reuse across studies."""

    model = models.ForeignKey(ClassifierModel, on_delete=models.CASCADE, related_name="predictions")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="predictions")
    weights_sha256 = models.CharField(max_length=64, blank=True)
    top_classes = models.JSONField(help_text="class ids, best first")
    top_scores = models.JSONField(help_text="softmax probabilities, same order")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "image", "weights_sha256"], name="prediction_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.model}:{self.image} -> {self.top_classes[:1]}"


class Stimulus(models.Model):
    """A rendered heatmap with its provenance; content-addressed by ``sha256``."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="stimuli")
    model = models.ForeignKey(ClassifierModel, on_delete=models.CASCADE, related_name="stimuli")
    method = models.CharField(max_length=64)
    target_class = models.IntegerField()
    settings = models.JSONField(default=dict)
    settings_hash = models.CharField(max_length=64)
    file = models.FileField(upload_to="stimuli/")
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "stimuli"
        constraints = [
            models.UniqueConstraint(
                fields=["image", "model", "method", "target_class", "settings_hash"], name="stimulus_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.method}:{self.image}:{self.target_class}"


class Item(models.Model):
    """What one judgment shows and what counts as right.

    Class discrimination: ``stimulus_a`` is the heatmap for ``target_class``; ``options`` holds
    the two category names and ``correct_option`` the index of the right one.
    Trust: ``stimulus_a`` and ``stimulus_b`` are the maps of the pair's model A and model B.
    """

    class Role(models.TextChoices):
        MAIN = "main", "main"
        CATCH = "catch", "catch"
        PRACTICE = "practice", "practice"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="items")
    public_id = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MAIN)
    method = models.CharField(max_length=64)
    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="items")
    target_class = models.IntegerField(help_text="class explained (trust: the true class both predicted)")
    target_label = models.CharField(max_length=200, blank=True)
    options = models.JSONField(default=list)
    correct_option = models.IntegerField(null=True, blank=True)
    stimulus_a = models.ForeignKey(Stimulus, on_delete=models.PROTECT, related_name="+", null=True, blank=True)
    stimulus_b = models.ForeignKey(Stimulus, on_delete=models.PROTECT, related_name="+", null=True, blank=True)
    #: the third and fourth panels of a design that shows more than two (HIVE distinction: the
    #: maps of the model's top-4 classes side by side); ``Design.stimulus_slots`` names the ones used
    stimulus_c = models.ForeignKey(Stimulus, on_delete=models.PROTECT, related_name="+", null=True, blank=True)
    stimulus_d = models.ForeignKey(Stimulus, on_delete=models.PROTECT, related_name="+", null=True, blank=True)
    tie_rank = models.IntegerField(default=0, help_text="seeded random rank that breaks allocation ties")
    n_leased = models.PositiveIntegerField(default=0, help_text="open leases")
    n_answered = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["study", "role", "method", "image", "target_class"], name="item_unique_in_study"
            ),
        ]
        indexes = [models.Index(fields=["study", "role", "n_answered", "tie_rank"], name="item_alloc_idx")]

    def __str__(self) -> str:
        return f"{self.study_id}:{self.role}:{self.method}:{self.image_id}:{self.target_class}"


class Participant(models.Model):
    """A crowd worker in one study, bound once to an opaque ``token``."""

    class Status(models.TextChoices):
        STARTED = "started", "started"
        DECLINED = "declined", "declined consent"
        CONSENTED = "consented", "consented"
        SCREENED_OUT = "screened_out", "screened out (practice not passed)"
        IN_PROGRESS = "in_progress", "in progress"
        COMPLETED = "completed", "completed"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="participants")
    token = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    platform = models.CharField(max_length=16, choices=Study.Platform.choices)
    platform_worker_id = models.CharField(max_length=255, help_text="normalised platform id (public, not a secret)")
    session_key = models.CharField(
        max_length=255,
        default=new_token,
        help_text="the platform session this participant is bound to: MTurk assignmentId, Prolific SESSION_ID, "
        "or the link participant's own id",
    )
    worker_hash = models.CharField(max_length=64, help_text="salted hash of the platform id, for exports")
    mturk_assignment_id = models.CharField(max_length=255, blank=True)
    mturk_hit_id = models.CharField(max_length=255, blank=True)
    mturk_submit_to = models.URLField(blank=True)
    prolific_study_id = models.CharField(max_length=64, blank=True)
    prolific_session_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTED)
    consent_version = models.CharField(max_length=32, blank=True)
    practice_passed = models.BooleanField(default=False)
    practice_attempts_used = models.PositiveSmallIntegerField(default=0)
    questionnaire = models.JSONField(default=dict, blank=True)
    completion_code = models.CharField(max_length=32, blank=True, help_text="this participant's own code, set on completion")
    invitation = models.CharField(max_length=64, blank=True, help_text="the single-use invitation this participant entered with")
    entry_client = models.CharField(
        max_length=64, blank=True, help_text="salted hash of the client address at entry (per-client cap, audit)"
    )
    arm = models.CharField(max_length=64, blank=True, help_text="the study arm assigned at entry (empty: no arms)")
    is_simulated = models.BooleanField(default=False)
    started_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "platform", "session_key"], name="participant_unique_session"),
            models.UniqueConstraint(
                fields=["study", "invitation"], condition=~Q(invitation=""), name="participant_invitation_once"
            ),
        ]
        indexes = [
            models.Index(fields=["study", "platform", "platform_worker_id"], name="participant_worker_idx"),
            models.Index(fields=["study", "entry_client"], name="participant_client_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.platform}:{self.worker_hash[:10]}"


class Assignment(models.Model):
    """One item leased to one participant, with every random choice the worker saw."""

    class Status(models.TextChoices):
        LEASED = "leased", "leased"
        ANSWERED = "answered", "answered"
        EXPIRED = "expired", "expired"

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="assignments")
    item = models.ForeignKey(Item, on_delete=models.PROTECT, related_name="assignments")
    token = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    position = models.PositiveIntegerField(help_text="order in the participant's sequence")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.LEASED)
    option_order = models.JSONField(default=list, help_text="indices into item.options, as displayed")
    model_a_shown_left = models.BooleanField(null=True, help_text="trust: was the pair's model A shown as Robot A")
    leased_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    shown_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["participant", "item"], name="assignment_item_once_per_participant"),
        ]
        indexes = [models.Index(fields=["status", "expires_at"], name="assignment_lease_idx")]

    def __str__(self) -> str:
        return f"{self.participant_id}#{self.position}:{self.item_id}"


class Response(models.Model):
    """The answer to one assignment (exactly one, enforced by the database)."""

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="response")
    chosen_option = models.IntegerField(null=True, blank=True, help_text="index into item.options")
    correct = models.BooleanField(null=True)
    score_model_a = models.SmallIntegerField(
        null=True, blank=True, help_text="trust: -2..+2, positive = model A more reasonable"
    )
    client_response_ms = models.PositiveIntegerField(null=True, blank=True)
    focus_events = models.JSONField(default=list, blank=True)
    comment = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(score_model_a__isnull=True) | Q(score_model_a__gte=-2, score_model_a__lte=2),
                name="response_likert_range",
            ),
        ]

    def __str__(self) -> str:
        return f"response to {self.assignment_id}"


class Job(models.Model):
    """A background job (prepare, evaluate) and its progress, shown in the admin."""

    class Kind(models.TextChoices):
        PREPARE = "prepare", "prepare stimuli"
        EVALUATE = "evaluate", "automatic evaluation"

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    stage = models.CharField(max_length=64, blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    chunk_attempts = models.JSONField(
        default=dict, blank=True,
        help_text="prepare jobs: times each chunk was started ('<model id>:<image ids>' -> count); "
                  "a chunk started more than XAISTUDY_CHUNK_MAX_ATTEMPTS times fails the job",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.study_id} {self.status} {self.done}/{self.total}"


class EvaluationResult(models.Model):
    """Automatic evaluation of one method in one study: per-image values of one metric."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="evaluations")
    method = models.CharField(max_length=64)
    metric = models.CharField(max_length=64)
    values = models.JSONField(default=list, help_text="one value per image (NaN as null)")
    summary = models.JSONField(default=dict, help_text="mean and bootstrap interval")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "method", "metric"], name="evaluation_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.study_id}:{self.method}:{self.metric}"


class PlatformAction(models.Model):
    """One call to a crowd platform (the payment ledger, issue #17): written and committed *before*
    the call with its idempotency key, updated with the platform's answer. A retry finds the row:
    one still ``pending`` or ``sent`` (a crash or a timeout between the call and our commit) is
    reconciled against the platform before anything is sent again, so nothing is paid twice and
    nothing is forgotten (``studies.services.ledger``)."""

    class Action(models.TextChoices):
        CREATE = "create", "create the HIT / study"
        PUBLISH = "publish", "publish"
        APPROVE = "approve", "approve"
        REJECT = "reject", "reject"
        BONUS = "bonus", "bonus"
        QUALIFY = "qualify", "grant the took-part qualification / add to the participant group"

    class Status(models.TextChoices):
        PENDING = "pending", "written, not sent"
        SENT = "sent", "sent, no answer recorded"
        CONFIRMED = "confirmed", "the platform confirmed it"
        FAILED = "failed", "the platform refused it"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="platform_actions")
    participant = models.ForeignKey(
        "Participant", on_delete=models.PROTECT, null=True, blank=True, related_name="platform_actions"
    )
    platform = models.CharField(max_length=16, choices=Study.Platform.choices)
    action = models.CharField(max_length=16, choices=Action.choices)
    idempotency_key = models.CharField(
        max_length=64, unique=True, help_text="the same key on every retry (MTurk UniqueRequestToken, at most 64)"
    )
    amount_cents = models.PositiveIntegerField(null=True, blank=True, help_text="bonus or reward, in cents")
    currency = models.CharField(max_length=3, default="USD")
    request = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    response = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["study", "action", "status"], name="platform_action_idx")]

    def __str__(self) -> str:
        return f"{self.platform}:{self.action}:{self.idempotency_key} {self.status}"
