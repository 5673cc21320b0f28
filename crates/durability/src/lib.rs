//! Durability model: Markov-chain analysis and Monte Carlo simulation of data loss.
