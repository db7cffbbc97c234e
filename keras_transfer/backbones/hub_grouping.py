"""Blocks of a SavedModel, found in its variables' names.

`kt.HubLayer.variable_groups()` splits one SavedModel into blocks with these
functions, so `kt.layer_groups` (and every rule on layer groups) reaches
inside it. Block names are found by the one table of block patterns
(`keras_transfer.groups.block_patterns.block_of`), applied to each scope
component of a variable's name (`encoder/layer_3/attention/kernel` has the
components `encoder`, `layer_3`, `attention`).
"""

from __future__ import annotations

import os

from keras_transfer.groups.block_patterns import block_of
from keras_transfer.groups.layer_groups import split_by_patterns


def block_key(saved_name: str) -> str | None:
    """The block of a variable: its name up to the first block-like scope.

    Example:

    >>> from keras_transfer.backbones.hub_grouping import block_key
    >>> block_key("encoder/layer_3/attention/kernel"), block_key("net/block2a_expand/kernel")
    ('encoder/layer_3', 'net/block2')
    >>> print(block_key("pooler/dense/kernel"))
    None
    """
    scopes = saved_name.split("/")[:-1]
    for index, scope in enumerate(scopes):
        block = block_of(scope)
        if block is not None:
            return "/".join([*scopes[:index], block])
    return None


def groups_from_names(named, trainable: set) -> list[tuple[str, list]]:
    """Blocks by name, as `(name, variables)` pairs in the order of `named`.

    Each run of variables outside any block (embeddings, a pooler) is a group
    of its own, named by its common scope; a group with nothing to train joins
    the group before it (or, at the start, the one after it).

    Args:
        named: `(SavedModel name, variable)` pairs, input to output.
        trainable: the `id`s of the variables that could train.

    Returns:
        The groups, or `[]` when no name holds a block.
    """
    groups: list[tuple[str | None, list]] = []
    index_of: dict[str, int] = {}
    for saved_name, variable in named:
        key = block_key(saved_name)
        if key is None:
            if groups and groups[-1][0] is None:
                groups[-1][1].append((saved_name, variable))
            else:
                groups.append((None, [(saved_name, variable)]))
        elif key in index_of:
            groups[index_of[key]][1].append((saved_name, variable))
        else:
            index_of[key] = len(groups)
            groups.append((key, [(saved_name, variable)]))
    if not index_of:
        return []
    named_groups = [(key or _common_scope(members), members) for key, members in groups]
    return _merge_untrainable([(n, [v for _, v in m]) for n, m in named_groups], trainable)


def groups_from_patterns(named, patterns, layer_name: str) -> list[tuple[str, list]]:
    """`(pattern, variables)` pairs: each variable joins the first pattern its
    SavedModel name matches (`re.search`); every pattern must match one."""
    what = f"SavedModel variables of kt.HubLayer '{layer_name}'"
    return list(zip(patterns, split_by_patterns(named, patterns, what)))


def _common_scope(members) -> str:
    scopes = [name.split("/")[:-1] for name, _ in members]
    common = os.path.commonprefix(scopes)
    return "/".join(common) if common else members[0][0]


def _merge_untrainable(groups, trainable: set) -> list[tuple[str, list]]:
    """Folds groups with nothing to train (a lone moving statistic) into a
    neighbour, so that no group is frozen or unfrozen to no effect."""
    merged: list[tuple[str, list]] = []
    pending: list = []
    for name, variables in groups:
        if not any(id(variable) in trainable for variable in variables):
            (merged[-1][1] if merged else pending).extend(variables)
            continue
        merged.append((name, pending + variables))
        pending = []
    return merged
