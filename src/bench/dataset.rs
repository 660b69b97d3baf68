//! The benchmark's dataset: its shape, and seeding it through [`crate::postgres::Seeder`].

pub use crate::postgres::seeding::{Dataset, Markers, Shape};

/// Seeds what is missing of `shape` into the database of `settings`.
pub async fn seed(settings: &crate::postgres::PgSettings, shape: Shape) -> anyhow::Result<Dataset> {
    anyhow::ensure!(
        shape.users >= shape.members_per_channel,
        "--users must be at least --members"
    );
    let seeder = crate::postgres::Seeder::connect(settings).await?;
    Ok(seeder.seed(shape).await?)
}
