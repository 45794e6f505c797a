//! The motion model: ByteTrack's constant-velocity Kalman filter over box centre, aspect ratio
//! and height (`xyah`). Its matrices are block-diagonal per coordinate (the transition couples a
//! coordinate only with its own velocity; the noises are diagonal), so it is exactly four
//! independent 2×2 filters, written out in closed form here.

use serde::{Deserialize, Serialize};

/// ByteTrack's noise weights, relative to the box height, per step of [`STEP_S`].
const WEIGHT_POSITION: f64 = 1.0 / 20.0;
const WEIGHT_VELOCITY: f64 = 1.0 / 160.0;
/// The step ByteTrack's weights are tuned for (one frame of 30 fps video). Steps here follow
/// capture time, so dropped frames stretch a step instead of bending the motion.
pub const STEP_S: f64 = 1.0 / 30.0;
/// Longest gap one prediction bridges; beyond it the filter coasts as if this much passed.
const MAX_STEPS: f64 = 300.0;

/// `[x, y, aspect, h]` standard deviations: `weight · h` for the centre and the height (they
/// scale with the box), a fixed `aspect` one for the aspect ratio, as ByteTrack sets them.
fn stds(weight: f64, h: f64, aspect: f64) -> [f64; 4] {
    [weight * h, weight * h, aspect, weight * h]
}

/// One coordinate and its velocity (per step), with their covariance `[[pp, pv], [pv, vv]]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub p: f64,
    pub v: f64,
    pub pp: f64,
    pub pv: f64,
    pub vv: f64,
}

impl Axis {
    fn predict(&mut self, k: f64, q_p: f64, q_v: f64) {
        self.p += k * self.v;
        self.pp += 2.0 * k * self.pv + k * k * self.vv + q_p;
        self.pv += k * self.vv;
        self.vv += q_v;
    }

    fn update(&mut self, z: f64, r: f64) {
        let s = self.pp + r;
        if !(s.is_finite() && s > 0.0) {
            return;
        }
        let (kp, kv) = (self.pp / s, self.pv / s);
        let innovation = z - self.p;
        self.p += kp * innovation;
        self.v += kv * innovation;
        self.vv -= kv * self.pv;
        self.pv *= 1.0 - kp;
        self.pp *= 1.0 - kp;
    }
}

/// Centre x, centre y, aspect (w/h) and height of a box.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Motion {
    pub axes: [Axis; 4],
}

/// `[x1, y1, x2, y2]` → `[cx, cy, w/h, h]`.
pub fn xyah(b: [f32; 4]) -> [f64; 4] {
    let w = f64::from(b[2] - b[0]).max(1e-3);
    let h = f64::from(b[3] - b[1]).max(1e-3);
    [
        f64::from(b[0]) + w / 2.0,
        f64::from(b[1]) + h / 2.0,
        w / h,
        h,
    ]
}

impl Motion {
    /// A filter at the measured box, at rest, with ByteTrack's initial uncertainty.
    pub fn new(bbox: [f32; 4]) -> Self {
        let z = xyah(bbox);
        let h = z[3];
        let pos = stds(2.0 * WEIGHT_POSITION, h, 1e-2);
        let vel = stds(10.0 * WEIGHT_VELOCITY, h, 1e-5);
        let axes = std::array::from_fn(|i| Axis {
            p: z[i],
            v: 0.0,
            pp: pos[i] * pos[i],
            pv: 0.0,
            vv: vel[i] * vel[i],
        });
        Self { axes }
    }

    /// Moves the state `dt_s` seconds ahead; the process noise grows with the time passed.
    pub fn predict(&mut self, dt_s: f64) {
        let k = (dt_s / STEP_S).clamp(0.0, MAX_STEPS);
        if k == 0.0 {
            return;
        }
        let h = self.axes[3].p.max(1e-3);
        let pos = stds(WEIGHT_POSITION, h, 1e-2);
        let vel = stds(WEIGHT_VELOCITY, h, 1e-5);
        for (i, axis) in self.axes.iter_mut().enumerate() {
            axis.predict(k, k * pos[i] * pos[i], k * vel[i] * vel[i]);
        }
    }

    /// Corrects the state with a measured box.
    pub fn update(&mut self, bbox: [f32; 4]) {
        let z = xyah(bbox);
        let h = self.axes[3].p.max(1e-3);
        let std = stds(WEIGHT_POSITION, h, 1e-1);
        for (i, axis) in self.axes.iter_mut().enumerate() {
            axis.update(z[i], std[i] * std[i]);
        }
    }

    /// The state as a box `[x1, y1, x2, y2]`.
    pub fn bbox(&self) -> [f32; 4] {
        let [cx, cy, a, h] = self.axes.map(|axis| axis.p);
        let h = h.max(0.0);
        let w = (a * h).max(0.0);
        [
            (cx - w / 2.0) as f32,
            (cy - h / 2.0) as f32,
            (cx + w / 2.0) as f32,
            (cy + h / 2.0) as f32,
        ]
    }

    /// Velocity of the box centre in pixels per second.
    pub fn velocity(&self) -> [f32; 2] {
        [
            (self.axes[0].v / STEP_S) as f32,
            (self.axes[1].v / STEP_S) as f32,
        ]
    }

    /// Whether every number is finite (a restored state might not be).
    pub fn is_finite(&self) -> bool {
        self.axes
            .iter()
            .all(|a| [a.p, a.v, a.pp, a.pv, a.vv].iter().all(|x| x.is_finite()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A box moving 3 px per frame to the right: after a few updates the filter predicts where
    /// it goes next and reports its speed in pixels per second.
    #[test]
    fn learns_a_constant_velocity() {
        let at = |i: u32| {
            let x = 100.0 + 3.0 * i as f32;
            [x, 50.0, x + 40.0, 130.0]
        };
        let mut m = Motion::new(at(0));
        for i in 1..30 {
            m.predict(STEP_S);
            m.update(at(i));
        }
        m.predict(STEP_S);
        let predicted = m.bbox();
        let expected = at(30);
        for (p, e) in predicted.iter().zip(expected) {
            assert!((p - e).abs() < 0.5, "{predicted:?} vs {expected:?}");
        }
        let [vx, vy] = m.velocity();
        assert!((vx - 90.0).abs() < 3.0, "vx {vx}");
        assert!(vy.abs() < 1.0, "vy {vy}");
    }

    /// Time, not frame count, drives the motion: a gap of three steps moves it three times as far.
    #[test]
    fn a_longer_gap_predicts_further() {
        let mut m = Motion::new([0.0, 0.0, 10.0, 10.0]);
        for a in &mut m.axes[..1] {
            a.v = 2.0;
        }
        let mut one = m;
        one.predict(STEP_S);
        m.predict(3.0 * STEP_S);
        assert!((one.bbox()[0] - 2.0).abs() < 1e-4);
        assert!((m.bbox()[0] - 6.0).abs() < 1e-4);
    }
}
