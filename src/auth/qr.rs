//! The QR code an authenticator app scans: drawn in the terminal, or written as a PNG.

use std::path::Path;

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("the provisioning URI does not fit in a QR code: {0}")]
    Encode(#[from] qrcode::types::QrError),
    #[error("{path}: the PNG cannot be written: {source}")]
    Png {
        path: String,
        #[source]
        source: image::ImageError,
    },
}

fn encode(uri: &str) -> Result<QrCode, QrError> {
    Ok(QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)?)
}

/// The QR code drawn with Unicode half blocks, dark on light, with the quiet zone scanners need.
pub fn terminal(uri: &str) -> Result<String, QrError> {
    Ok(encode(uri)?
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Writes the QR code as a PNG (`qrcode.png`, as the original did).
pub fn write_png(uri: &str, path: &Path) -> Result<(), QrError> {
    let image = encode(uri)?
        .render::<image::Luma<u8>>()
        .min_dimensions(256, 256)
        .build();
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| QrError::Png {
            path: path.display().to_string(),
            source,
        })
}
