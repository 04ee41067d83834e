import pytest

from harness.errors import UserError
from harness.space import SPACES_DIR, load_space, parse_space

BASE = "name: t\narchitectures: [convnet]\ndatasets: {mnist: {}}\n"


@pytest.mark.parametrize("text,expected", [
    ("name: t\narchitectures: [foo]\ndatasets: {mnist: {}}", "architectures.0: 'foo' is not allowed; allowed: convnet, stnet, coordconv, stcoordconv, resnext"),
    ("name: t\narchitectures: [convnet]\ndatasets: {cifar: {}}", "datasets.cifar: 'cifar' is not allowed; allowed: mnist, fashion_mnist"),
    ("name: t\narchitectures: [convnet]\ndatasets: {mnist: {epochs: 0}}", "datasets.mnist.epochs: Input should be greater than or equal to 1 (got 0)"),
    ("name: t\narchitectures: [convnet]\ndatasets: {mnist: {epoch: 3}}", "datasets.mnist.epoch: unknown key; allowed: epochs, batch_size"),
    (BASE + "training: {batch_size: -1}", "training.batch_size: Input should be greater than or equal to 1 (got -1)"),
    (BASE + "bogus: 1", "bogus: unknown key; allowed: name, description, architectures, datasets"),
    (BASE + "training: {seeds: 0}", "seeds: must be a count ≥ 1 or a non-empty list of distinct seeds ≥ 0 (got 0)"),
    (BASE + "training: {lr: fast}", "training.lr: Input should be a valid number"),
    (BASE + "training: {optimizer: rmsprop}", "training.optimizer: 'rmsprop' is not allowed; allowed: sgd, adam"),
    (BASE + "resources: {gpu: -1}", "resources.gpu: Input should be greater than or equal to 0 (got -1)"),
    ("name: t\narchitectures: []\ndatasets: {mnist: {}}", "architectures: List should have at least 1 item"),
    ("name: [t\n", "malformed YAML at line 2"),
    ("- just\n- a list\n", "not a text YAML file of a mapping (name, architectures, datasets, ...); got a YAML list"),
    ("architectures: [convnet]\ndatasets: {mnist: {}}", "name: Field required"),
])
def test_bad_space_gives_one_line_error_naming_field_and_allowed_values(text, expected):
    with pytest.raises(UserError) as err:
        parse_space(text, source="s.yaml")
    message = str(err.value)
    assert expected in message
    assert message.startswith("s.yaml: ") and "\n" not in message


def test_grid_is_architecture_by_dataset_by_seed_with_per_dataset_overrides():
    space = parse_space("""
name: t
architectures: [convnet, stnet]
training: {lr: 0.1, seeds: 2}
datasets:
  mnist: {lr: 0.005, seeds: [3, 7, 9]}
  fashion_mnist: {epochs: 4}
""")
    trials = space.trials()
    assert len(trials) == 2 * 3 + 2 * 2
    mnist = [t for t in trials if t.dataset == "mnist"]
    assert {t.seed for t in mnist} == {3, 7, 9} and {t.training.lr for t in mnist} == {0.005}
    fashion = [t for t in trials if t.dataset == "fashion_mnist"]
    assert {t.training.lr for t in fashion} == {0.1} and {t.training.epochs for t in fashion} == {4}
    assert len({t.trial_id for t in trials}) == len(trials)


def test_trial_identity_is_stable_and_covers_hyper_parameters():
    a = parse_space(BASE).trials()[0]
    b = parse_space(BASE + "description: renamed\nresources: {cpu: 2}").trials()[0]
    assert a.trial_id == b.trial_id  # resources and names do not change the result
    c = parse_space(BASE + "training: {lr: 0.02}").trials()[0]
    assert c.trial_id != a.trial_id
    assert a.seed_id(a.seed) == a.trial_id == a.ids[a.seed]


@pytest.mark.parametrize("name,n_trials", [("quick", 8), ("reference", 4 * 10 + 4 * 5), ("tiny", 2)])
def test_shipped_spaces_are_valid(name, n_trials):
    space, text = load_space(name)
    assert len(space.trials()) == n_trials and text == (SPACES_DIR / f"{name}.yaml").read_text()


def test_reference_space_is_the_reference_protocol():
    space, _ = load_space("reference")
    mnist, fashion = space.training_for("mnist"), space.training_for("fashion_mnist")
    assert (mnist.epochs, mnist.lr, len(mnist.seed_list())) == (20, 0.005, 10)
    assert (fashion.epochs, fashion.lr, len(fashion.seed_list())) == (30, 0.01, 5)
    assert mnist.batch_size == fashion.batch_size == 64 and mnist.optimizer == "sgd"


def test_unknown_space_name_lists_the_shipped_ones():
    with pytest.raises(UserError, match="allowed: a YAML path or one of the [0-9]+ shipped spaces below\n  .*quick.*reference"):
        load_space("nope")


def test_model_options_are_checked_against_the_builder():
    space = parse_space(BASE.replace("[convnet]", "[coordconv]") + "model_options: {coordconv: {with_r: true}}")
    assert space.trials()[0].model_options == {"with_r": True}
    with pytest.raises(UserError, match="model_options.convnet: unknown option 'with_r'; allowed: dropout"):
        parse_space(BASE + "model_options: {convnet: {with_r: true}}")
