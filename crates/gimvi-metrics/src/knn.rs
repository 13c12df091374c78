//! Exact k-nearest-neighbour search in a low-dimensional latent space (Euclidean), with a
//! k-d tree and queries run in parallel with rayon.
//!
//! The tree splits on the dimension of largest spread at the median, down to leaves of at most
//! [`LEAF_SIZE`] points. A query descends to the nearest leaf first and visits another subtree
//! only when the splitting plane is closer than the current k-th neighbour, so the result is
//! exact. Ties in distance are broken by the smaller point index, so results are deterministic.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::MetricsError;

/// Maximum number of points in a leaf.
pub const LEAF_SIZE: usize = 16;

#[derive(Debug, Clone)]
enum Node {
    Leaf {
        start: usize,
        end: usize,
    },
    Split {
        dim: usize,
        value: f32,
        left: usize,
        right: usize,
    },
}

/// A k-d tree over the rows of a points × dimensions matrix.
#[derive(Debug, Clone)]
pub struct KdTree<'a> {
    points: ArrayView2<'a, f32>,
    order: Vec<usize>,
    nodes: Vec<Node>,
}

/// A neighbour candidate ordered by (distance², index).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    dist2: f32,
    index: usize,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist2
            .total_cmp(&other.dist2)
            .then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<'a> KdTree<'a> {
    /// Builds the tree. Errors on an empty matrix, zero dimensions or non-finite coordinates.
    pub fn new(points: ArrayView2<'a, f32>) -> Result<Self, MetricsError> {
        if points.nrows() == 0 {
            return Err(MetricsError::Empty("k-NN reference points"));
        }
        if points.ncols() == 0 {
            return Err(MetricsError::Empty("k-NN point dimensions"));
        }
        if points.iter().any(|x| !x.is_finite()) {
            return Err(MetricsError::NonFinite("k-NN reference points"));
        }
        let mut tree = KdTree {
            points,
            order: (0..points.nrows()).collect(),
            nodes: Vec::new(),
        };
        tree.build(0, points.nrows());
        Ok(tree)
    }

    /// Number of points in the tree.
    pub fn len(&self) -> usize {
        self.points.nrows()
    }

    /// Whether the tree has no points (never true for a constructed tree).
    pub fn is_empty(&self) -> bool {
        self.points.nrows() == 0
    }

    /// Dimension of the points.
    pub fn dim(&self) -> usize {
        self.points.ncols()
    }

    fn build(&mut self, start: usize, end: usize) -> usize {
        let id = self.nodes.len();
        if end - start <= LEAF_SIZE {
            self.nodes.push(Node::Leaf { start, end });
            return id;
        }
        // Dimension of largest spread.
        let d = self.points.ncols();
        let mut best = (0, -1.0f32);
        for dim in 0..d {
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for &i in &self.order[start..end] {
                let v = self.points[[i, dim]];
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if hi - lo > best.1 {
                best = (dim, hi - lo);
            }
        }
        let dim = best.0;
        if best.1 <= 0.0 {
            // All points identical: no split possible.
            self.nodes.push(Node::Leaf { start, end });
            return id;
        }
        let mid = start + (end - start) / 2;
        let points = self.points;
        self.order[start..end].select_nth_unstable_by(mid - start, |&a, &b| {
            points[[a, dim]]
                .total_cmp(&points[[b, dim]])
                .then(a.cmp(&b))
        });
        let value = points[[self.order[mid], dim]];
        self.nodes.push(Node::Leaf { start, end }); // placeholder, replaced below
        let left = self.build(start, mid);
        let right = self.build(mid, end);
        self.nodes[id] = Node::Split {
            dim,
            value,
            left,
            right,
        };
        id
    }

    /// The `k` nearest points to `query`, nearest first, as (point index, Euclidean distance).
    /// `exclude` removes one point index (the query itself when querying a point of the tree).
    pub fn nearest(&self, query: &[f32], k: usize, exclude: Option<usize>) -> Vec<(usize, f32)> {
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k + 1);
        if k > 0 {
            self.search(0, query, k, exclude, &mut heap);
        }
        let mut out: Vec<Candidate> = heap.into_vec();
        out.sort();
        out.into_iter().map(|c| (c.index, c.dist2.sqrt())).collect()
    }

    fn search(
        &self,
        node: usize,
        query: &[f32],
        k: usize,
        exclude: Option<usize>,
        heap: &mut BinaryHeap<Candidate>,
    ) {
        match self.nodes[node] {
            Node::Leaf { start, end } => {
                for &i in &self.order[start..end] {
                    if Some(i) == exclude {
                        continue;
                    }
                    let row = self.points.row(i);
                    let mut dist2 = 0.0f32;
                    for (a, b) in row.iter().zip(query) {
                        let diff = a - b;
                        dist2 += diff * diff;
                    }
                    let cand = Candidate { dist2, index: i };
                    if heap.len() < k {
                        heap.push(cand);
                    } else if let Some(worst) = heap.peek() {
                        if cand < *worst {
                            heap.pop();
                            heap.push(cand);
                        }
                    }
                }
            }
            Node::Split {
                dim,
                value,
                left,
                right,
            } => {
                let diff = query[dim] - value;
                let (near, far) = if diff < 0.0 {
                    (left, right)
                } else {
                    (right, left)
                };
                self.search(near, query, k, exclude, heap);
                let plane2 = diff * diff;
                let visit_far = heap.len() < k || heap.peek().is_some_and(|w| plane2 <= w.dist2);
                if visit_far {
                    self.search(far, query, k, exclude, heap);
                }
            }
        }
    }
}

/// Indices of the `k` nearest reference points of every query row, nearest first (rayon-parallel
/// over queries). Errors if dimensions differ, `k` exceeds the number of reference points, or
/// any coordinate is not finite.
pub fn knn(
    reference: ArrayView2<'_, f32>,
    queries: ArrayView2<'_, f32>,
    k: usize,
) -> Result<Vec<Vec<usize>>, MetricsError> {
    let tree = KdTree::new(reference)?;
    check_queries(&tree, queries, k, tree.len())?;
    Ok((0..queries.nrows())
        .into_par_iter()
        .map(|i| {
            let q = queries.row(i).to_vec();
            tree.nearest(&q, k, None)
                .into_iter()
                .map(|(i, _)| i)
                .collect()
        })
        .collect())
}

/// Indices of the `k` nearest *other* points of every point of `points` (the point itself
/// excluded), nearest first. Errors if `k` ≥ the number of points.
pub fn knn_self(points: ArrayView2<'_, f32>, k: usize) -> Result<Vec<Vec<usize>>, MetricsError> {
    let tree = KdTree::new(points)?;
    check_queries(&tree, points, k, tree.len().saturating_sub(1))?;
    Ok((0..points.nrows())
        .into_par_iter()
        .map(|i| {
            let q = points.row(i).to_vec();
            tree.nearest(&q, k, Some(i))
                .into_iter()
                .map(|(j, _)| j)
                .collect()
        })
        .collect())
}

fn check_queries(
    tree: &KdTree<'_>,
    queries: ArrayView2<'_, f32>,
    k: usize,
    available: usize,
) -> Result<(), MetricsError> {
    if queries.ncols() != tree.dim() {
        return Err(MetricsError::ShapeMismatch {
            what: "k-NN query dimension",
            expected: tree.dim(),
            got: queries.ncols(),
        });
    }
    if k == 0 || k > available {
        return Err(MetricsError::InvalidK { k, available });
    }
    if queries.iter().any(|x| !x.is_finite()) {
        return Err(MetricsError::NonFinite("k-NN query points"));
    }
    Ok(())
}
