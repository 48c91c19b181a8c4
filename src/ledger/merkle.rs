//! The RFC 9162 Merkle tree over entry hashes: the incremental frontier the
//! sequencer keeps, proof *plans* that say which stored nodes a proof needs,
//! and the RFC 9162 §2.1.3.2 / §2.1.4.2 verification algorithms.
//!
//! Proof generation is split in two so that it stays pure: a [`ProofPlan`]
//! lists the perfect subtrees ([`NodeId`]) whose hashes it needs; the store
//! reads exactly those (O(log n) rows) and [`ProofPlan::assemble`] computes
//! the proof from them.

use std::collections::HashMap;

use super::hash::{EMPTY_TREE_ROOT, Hash};

/// RFC 9162 leaf hash: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Hash::sha256(&[&[0x00], data])
}

/// RFC 9162 interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left.as_bytes());
    buf[33..].copy_from_slice(right.as_bytes());
    Hash::sha256(&[&buf])
}

/// A perfect, aligned subtree: the leaves `index << level .. (index + 1) << level`.
/// Level 0 nodes are the entry hashes themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves.
    pub level: u8,
    /// Position among the nodes of that level.
    pub index: u64,
}

impl NodeId {
    /// The first leaf it covers.
    pub fn first_leaf(&self) -> u64 {
        self.index << self.level
    }
}

/// Why a proof cannot be made or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The requested sizes or index are out of range.
    #[error("{0}")]
    OutOfRange(String),
    /// A node the plan needs was not supplied (a store defect).
    #[error("node at level {} index {} is missing from the stored tree", .0.level, .0.index)]
    MissingNode(NodeId),
    /// The proof does not lead to the expected root(s).
    #[error("proof does not verify: {0}")]
    Invalid(&'static str),
}

/// The roots of the perfect subtrees that make up a tree, largest first:
/// everything needed to append leaves and compute the root (O(log n) memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The perfect subtrees that make up a tree of `size` leaves, largest first.
    pub fn node_ids(size: u64) -> Vec<NodeId> {
        let mut ids = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1u64 << level) != 0 {
                ids.push(NodeId {
                    level,
                    index: start >> level,
                });
                start += 1u64 << level;
            }
        }
        ids
    }

    /// Rebuilds a frontier from the hashes of [`Frontier::node_ids`]`(size)`.
    ///
    /// # Errors
    /// If the number of hashes does not match the size.
    pub fn from_nodes(size: u64, nodes: Vec<Hash>) -> Result<Frontier, ProofError> {
        if nodes.len() != size.count_ones() as usize {
            return Err(ProofError::OutOfRange(format!(
                "a tree of size {size} has {} frontier nodes, got {}",
                size.count_ones(),
                nodes.len()
            )));
        }
        Ok(Frontier { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf; calls `completed` for every interior node (level >= 1)
    /// that this leaf completes, lowest first.
    pub fn push_with(&mut self, leaf: Hash, mut completed: impl FnMut(NodeId, Hash)) {
        let index = self.size;
        let mut hash = leaf;
        let mut level = 0u8;
        while (index >> level) & 1 == 1 {
            let left = self
                .nodes
                .pop()
                .expect("a set bit in the size has a frontier node");
            hash = node_hash(&left, &hash);
            level += 1;
            completed(
                NodeId {
                    level,
                    index: index >> level,
                },
                hash,
            );
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// Appends a leaf.
    pub fn push(&mut self, leaf: Hash) {
        self.push_with(leaf, |_, _| {});
    }

    /// `MTH` of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(last) = iter.next() else {
            return EMPTY_TREE_ROOT;
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// `MTH(D[n])` computed directly from all leaves (reference; O(n) memory).
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_TREE_ROOT,
        1 => leaves[0],
        n => {
            let k = largest_power_of_two_below(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly smaller than `n` (for `n >= 2`).
fn largest_power_of_two_below(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The perfect nodes whose hashes compute `MTH(D[start:end])`.
fn range_nodes(start: u64, end: u64, out: &mut Vec<NodeId>) {
    let n = end - start;
    if n.is_power_of_two() {
        let level = n.trailing_zeros() as u8;
        debug_assert_eq!(start % n, 0, "RFC 9162 subtrees are aligned");
        out.push(NodeId {
            level,
            index: start >> level,
        });
    } else {
        let k = largest_power_of_two_below(n);
        range_nodes(start, start + k, out);
        range_nodes(start + k, end, out);
    }
}

fn range_hash(start: u64, end: u64, nodes: &HashMap<NodeId, Hash>) -> Result<Hash, ProofError> {
    let n = end - start;
    if n.is_power_of_two() {
        let level = n.trailing_zeros() as u8;
        let id = NodeId {
            level,
            index: start >> level,
        };
        nodes.get(&id).copied().ok_or(ProofError::MissingNode(id))
    } else {
        let k = largest_power_of_two_below(n);
        Ok(node_hash(
            &range_hash(start, start + k, nodes)?,
            &range_hash(start + k, end, nodes)?,
        ))
    }
}

/// Which subtree hashes make up a proof, in proof order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofPlan {
    ranges: Vec<(u64, u64)>,
}

impl ProofPlan {
    /// `PATH(index, D[size])`, RFC 9162 §2.1.3.1.
    ///
    /// # Errors
    /// If `index >= size`.
    pub fn inclusion(index: u64, size: u64) -> Result<ProofPlan, ProofError> {
        if index >= size {
            return Err(ProofError::OutOfRange(format!(
                "leaf {index} is not in a tree of size {size} (it needs size > {index})"
            )));
        }
        fn path(m: u64, start: u64, end: u64, out: &mut Vec<(u64, u64)>) {
            let n = end - start;
            if n == 1 {
                return;
            }
            let k = largest_power_of_two_below(n);
            if m < k {
                path(m, start, start + k, out);
                out.push((start + k, end));
            } else {
                path(m - k, start + k, end, out);
                out.push((start, start + k));
            }
        }
        let mut ranges = Vec::new();
        path(index, 0, size, &mut ranges);
        Ok(ProofPlan { ranges })
    }

    /// `PROOF(first, D[second])`, RFC 9162 §2.1.4.1.
    ///
    /// # Errors
    /// Unless `0 < first <= second`.
    pub fn consistency(first: u64, second: u64) -> Result<ProofPlan, ProofError> {
        if first == 0 || first > second {
            return Err(ProofError::OutOfRange(format!(
                "a consistency proof needs 0 < from <= to, got from {first} to {second}"
            )));
        }
        fn subproof(m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<(u64, u64)>) {
            let n = end - start;
            if m == n {
                if !complete {
                    out.push((start, end));
                }
                return;
            }
            let k = largest_power_of_two_below(n);
            if m <= k {
                subproof(m, start, start + k, complete, out);
                out.push((start + k, end));
            } else {
                subproof(m - k, start + k, end, false, out);
                out.push((start, start + k));
            }
        }
        let mut ranges = Vec::new();
        subproof(first, 0, second, true, &mut ranges);
        Ok(ProofPlan { ranges })
    }

    /// The stored nodes this proof needs, without duplicates.
    pub fn needed(&self) -> Vec<NodeId> {
        let mut out = Vec::new();
        for &(start, end) in &self.ranges {
            range_nodes(start, end, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Computes the proof from the supplied node hashes.
    ///
    /// # Errors
    /// If a needed node is missing.
    pub fn assemble(&self, nodes: &HashMap<NodeId, Hash>) -> Result<Vec<Hash>, ProofError> {
        self.ranges
            .iter()
            .map(|&(start, end)| range_hash(start, end, nodes))
            .collect()
    }
}

/// RFC 9162 §2.1.3.2: checks that `leaf` is at `index` in the tree of
/// `size` whose root is `root`.
///
/// # Errors
/// [`ProofError::Invalid`] if it is not.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Invalid(
            "leaf index is not smaller than the tree size",
        ));
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s_n == 0 {
            return Err(ProofError::Invalid(
                "inclusion path is longer than the tree is high",
            ));
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::Invalid(
            "inclusion path is shorter than the tree is high",
        ));
    }
    if r != *root {
        return Err(ProofError::Invalid(
            "inclusion path leads to a different root",
        ));
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: checks that the tree of size `first` with root
/// `first_root` is a prefix of the tree of size `second` with `second_root`.
///
/// # Errors
/// [`ProofError::Invalid`] if it is not (a fork, or a bad proof).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first == 0 || first > second {
        return Err(ProofError::Invalid("consistency needs 0 < first <= second"));
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::Invalid(
                "the proof between equal sizes must be empty",
            ));
        }
        if first_root != second_root {
            return Err(ProofError::Invalid("two different roots for the same size"));
        }
        return Ok(());
    }
    if proof.is_empty() {
        return Err(ProofError::Invalid("consistency proof is empty"));
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut f_n, mut s_n) = (first - 1, second - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s_n == 0 {
            return Err(ProofError::Invalid("consistency proof is too long"));
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::Invalid("consistency proof is too short"));
    }
    if fr != *first_root {
        return Err(ProofError::Invalid(
            "consistency proof does not lead to the first root",
        ));
    }
    if sr != *second_root {
        return Err(ProofError::Invalid(
            "consistency proof does not lead to the second root",
        ));
    }
    Ok(())
}

/// Every perfect node of a small tree, for tests and for vectors.
pub fn all_nodes(leaves: &[Hash]) -> HashMap<NodeId, Hash> {
    let mut nodes = HashMap::new();
    let mut frontier = Frontier::default();
    for (i, leaf) in leaves.iter().enumerate() {
        nodes.insert(
            NodeId {
                level: 0,
                index: i as u64,
            },
            *leaf,
        );
        frontier.push_with(*leaf, |id, hash| {
            nodes.insert(id, hash);
        });
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn frontier_root_matches_reference_for_every_size() {
        let all = leaves(300);
        let mut frontier = Frontier::default();
        for n in 1..=all.len() {
            frontier.push(all[n - 1]);
            assert_eq!(frontier.root(), root_of(&all[..n]), "size {n}");
        }
    }

    #[test]
    fn frontier_node_ids_match_stored_nodes() {
        let all = leaves(77);
        let nodes = all_nodes(&all);
        for n in 1..=77u64 {
            let ids = Frontier::node_ids(n);
            let hashes = ids.iter().map(|id| nodes[id]).collect();
            let f = Frontier::from_nodes(n, hashes).unwrap();
            assert_eq!(f.root(), root_of(&all[..n as usize]));
        }
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies_and_tampering_fails() {
        let all = leaves(40);
        let nodes = all_nodes(&all);
        for n in 1..=40u64 {
            let root = root_of(&all[..n as usize]);
            for m in 0..n {
                let proof = ProofPlan::inclusion(m, n)
                    .unwrap()
                    .assemble(&nodes)
                    .unwrap();
                verify_inclusion(m, n, &all[m as usize], &proof, &root).unwrap();
                assert!(
                    verify_inclusion(m, n, &all[(m as usize + 1) % 40], &proof, &root).is_err()
                );
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = node_hash(first, first);
                    assert!(verify_inclusion(m, n, &all[m as usize], &bad, &root).is_err());
                }
            }
            for m in 1..=n {
                let first_root = root_of(&all[..m as usize]);
                let proof = ProofPlan::consistency(m, n)
                    .unwrap()
                    .assemble(&nodes)
                    .unwrap();
                verify_consistency(m, n, &first_root, &root, &proof).unwrap();
                if m < n {
                    let forked = leaf_hash(b"fork");
                    assert!(verify_consistency(m, n, &forked, &root, &proof).is_err());
                    let mut short = proof.clone();
                    short.pop();
                    assert!(verify_consistency(m, n, &first_root, &root, &short).is_err());
                }
            }
        }
    }

    #[test]
    fn plans_need_logarithmic_nodes() {
        let size = 10_000_000u64;
        for index in [0, 1, 4_999_999, 9_999_999] {
            let plan = ProofPlan::inclusion(index, size).unwrap();
            assert!(plan.needed().len() <= 2 * 24, "{}", plan.needed().len());
        }
        assert!(
            ProofPlan::consistency(7_777_777, size)
                .unwrap()
                .needed()
                .len()
                <= 2 * 24
        );
        assert!(ProofPlan::inclusion(5, 5).is_err());
        assert!(ProofPlan::consistency(0, 5).is_err());
    }
}
