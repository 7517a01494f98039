//! One sensor read from several threads (the engine's meter and the power monitor), so both
//! see the same energy counter instead of two diverging ones.

use std::sync::{Arc, Mutex};

use super::{EnergySource, PowerSample, PowerSensor};
use crate::GatewayError;

#[derive(Clone)]
pub struct SharedSensor {
    source: EnergySource,
    inner: Arc<Mutex<Box<dyn PowerSensor>>>,
}

impl SharedSensor {
    pub fn new(sensor: Box<dyn PowerSensor>) -> Self {
        Self {
            source: sensor.source(),
            inner: Arc::new(Mutex::new(sensor)),
        }
    }
}

impl PowerSensor for SharedSensor {
    fn source(&self) -> EnergySource {
        self.source
    }

    fn sample(&mut self) -> Result<PowerSample, GatewayError> {
        self.inner
            .lock()
            .map_err(|_| GatewayError::Power("sensor lock poisoned".into()))?
            .sample()
    }
}
